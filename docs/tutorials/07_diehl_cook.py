"""Diehl & Cook (2015) walkthrough at toy size: train, assign labels, classify.

The full protocol is ``examples/mnist_stdp.py``; this script shows the same API on 10 excitatory
neurons, 20 training digits and 20 test digits of the MNIST sample bundled with pysnn, 50 ms per
digit. At this size the accuracy printed at the end says nothing about the model (it is near
chance); it only shows that the pieces fit together.

    python docs/tutorials/07_diehl_cook.py
"""

import torch

import pysnn
from pysnn.datasets import MNISTSample
from pysnn.encoding import PoissonEncoder
from pysnn.evaluation import accuracy, all_activity, assign_labels, proportion_weighting
from pysnn.models import DiehlCook2015
from pysnn.multistep import run_layers

torch.manual_seed(0)
pysnn.set_checks(False)  # inputs come from the encoder: skip the per-step NaN read-back

N_NEURONS, N_TRAIN, N_TEST, TIME_MS, INTENSITY = 10, 20, 20, 50.0, 63.75

train, test = MNISTSample(train=True), MNISTSample(train=False)  # bundled, no download
encoder = PoissonEncoder(duration=TIME_MS, dt=1.0, shape=784)  # rates in Hz -> (T, B, 784) spikes


def encode(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 28, 28) -> Poisson spikes (T, B, 784), rate = pixel / 255 * 63.75 Hz."""
    return encoder(images.reshape(images.shape[0], -1).float() / 255.0 * INTENSITY)


net = DiehlCook2015(n_inputs=784, n_neurons=N_NEURONS)
print(net)

# 1. Unsupervised training: one digit at a time, STDP runs inside forward() in train() mode.
net.train()
train_counts = []
for i in range(N_TRAIN):
    counts = net.run(encode(train.data[i : i + 1]))  # resets state, runs T steps, normalises
    train_counts.append(counts)
print(
    f"trained on {N_TRAIN} digits; spikes per digit: {torch.cat(train_counts).sum(1).int().tolist()}"
)
print(f"learned threshold offsets theta (mV): {[round(v, 2) for v in net.exc.theta.tolist()]}")

# 2. Label assignment: freeze (eval(): no STDP, theta fixed) and record TRAINING digits.
net.eval()
with torch.no_grad():
    assign_counts = net.run(encode(train.data[:N_TRAIN]))  # a batch of 20 at once: (20, N)
assignments, proportions, rates = assign_labels(assign_counts, train.targets[:N_TRAIN], 10)
print(f"assignments (-1 = never fired): {assignments.tolist()}")

# 3. Classification of test digits by the two votes of the paper.
with torch.no_grad():
    test_counts = net.run(encode(test.data[:N_TEST]))
labels = test.targets[:N_TEST]
acc_all = accuracy(all_activity(test_counts, assignments, 10), labels)
acc_prop = accuracy(proportion_weighting(test_counts, assignments, proportions, 10), labels)
print(f"toy-size accuracy (not meaningful): all-activity {acc_all:.2f}, proportion {acc_prop:.2f}")

# 4. What run() runs: the step loop of forward(), which pysnn.multistep.run_layers takes as data
#    (net.step_program(): each layer with its incoming connections, then the rules) and runs in
#    one fused call for runs of steps, with the same spikes bit for bit. A network written by
#    hand from the same modules gets the same speed by calling run_layers itself.
spikes = encode(test.data[:1])
with torch.no_grad():
    net.reset_state()
    by_loop = sum(net(x) for x in spikes)
    net.reset_state()
    layers, rules = net.step_program()
    (fused,) = run_layers(net.inp, layers, spikes, rules, record=[net.exc], counts=True)
print("step loop and run_layers agree:", torch.equal(by_loop, fused))
pysnn.set_checks(True)
