"""Readouts for unsupervised spiking networks (Diehl & Cook 2015) and a linear readout.

Spike inputs to the functions below are either per-step spikes of shape
``(N_samples, T, n_neurons)`` (summed over the time axis here) or spike counts of shape
``(N_samples, n_neurons)``. Note the *sample-first* layout: record with a
:class:`pysnn.monitor.Monitor` (time-first ``(T, B, n)``) and use ``spikes.transpose(0, 1)``
or ``spikes.sum(0)`` to get counts per sample.

Everything is vectorised over samples and neurons; only the (small) class axis is looped over
where needed.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "spike_counts",
    "assign_labels",
    "all_activity",
    "proportion_weighting",
    "accuracy",
    "LinearReadout",
]


def _check_n_labels(n_labels: Any) -> int:
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1:
        raise ValueError(f"n_labels must be a positive int, got {n_labels!r}")
    return n_labels


def spike_counts(spikes: Tensor, arg: str = "spikes") -> Tensor:
    """Spike counts per sample and neuron, ``(N_samples, n_neurons)``, floating point.

    Args:
        spikes: ``(N_samples, T, n_neurons)`` spikes (summed over ``T``) or
            ``(N_samples, n_neurons)`` counts. bool / integer inputs become float32.
    """
    if not isinstance(spikes, Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor, got {type(spikes).__name__}")
    if spikes.dim() == 3:
        spikes = spikes.sum(1)
    elif spikes.dim() != 2:
        raise ValueError(
            f"{arg} must have shape (N_samples, T, n_neurons) or (N_samples, n_neurons), got "
            f"shape {tuple(spikes.shape)}"
        )
    if not spikes.is_floating_point():
        spikes = spikes.float()
    return spikes


def _check_labels(labels: Any, n_samples: int, n_labels: int, device: torch.device) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != n_samples:
        raise ValueError(
            f"labels must have shape ({n_samples},) matching the number of samples in spikes, "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    labels = labels.to(device=device, dtype=torch.long)
    if labels.numel() and (bool((labels < 0).any()) or bool((labels >= n_labels).any())):
        raise ValueError(
            f"labels must lie in [0, n_labels={n_labels}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def _check_assignments(assignments: Any, n_neurons: int, device: torch.device) -> Tensor:
    assignments = torch.as_tensor(assignments)
    if assignments.dim() != 1 or assignments.shape[0] != n_neurons:
        raise ValueError(
            f"assignments must have shape ({n_neurons},) matching n_neurons of spikes, got "
            f"shape {tuple(assignments.shape)}"
        )
    if assignments.is_floating_point() or assignments.dtype == torch.bool:
        raise TypeError(f"assignments must be an integer tensor, got dtype {assignments.dtype}")
    return assignments.to(device=device, dtype=torch.long)


def assign_labels(
    spikes: Tensor,
    labels: Tensor,
    n_labels: int,
    rates: Optional[Tensor] = None,
    alpha: float = 1.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Assign each neuron the class for which it fires most (Diehl & Cook 2015).

    Args:
        spikes: ``(N_samples, T, n_neurons)`` spikes or ``(N_samples, n_neurons)`` spike counts.
        labels: ``(N_samples,)`` integer class labels in ``[0, n_labels)``.
        n_labels: number of classes ``C``.
        rates: optional previous ``(n_neurons, C)`` rates for incremental assignment (not
            modified in place).
        alpha: decay of the previous ``rates`` (as in BindsNET). For every class ``c`` present
            in ``labels``::

                rates[:, c] = alpha * rates[:, c] + mean over samples of class c of counts

            Classes absent from ``labels`` keep their previous rates. With ``rates=None`` the
            result is simply the mean spike count per class. ``alpha=1`` accumulates the
            per-batch means (argmax and proportions do not depend on the overall scale),
            ``alpha=0`` forgets the old rates.

    Returns:
        ``(assignments, proportions, rates)``:

        * ``assignments`` ``(n_neurons,)`` long: ``argmax_c rates[n, c]`` (ties -> lowest class);
          **-1** for neurons whose rates are all zero (never fired). Such neurons take part in
          no vote in :func:`all_activity` / :func:`proportion_weighting`.
        * ``proportions`` ``(n_neurons, C)``: ``rates / rates.sum(1)``, all-zero rows for
          silent neurons (no NaN).
        * ``rates`` ``(n_neurons, C)``: mean spike count per sample (spikes/sample, not Hz).
    """
    counts = spike_counts(spikes)
    n_labels = _check_n_labels(n_labels)
    n_samples, n_neurons = counts.shape
    labels = _check_labels(labels, n_samples, n_labels, counts.device)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise TypeError(f"alpha must be a float, got {alpha!r}")
    if rates is None:
        rates = torch.zeros((n_neurons, n_labels), dtype=counts.dtype, device=counts.device)
    else:
        if not isinstance(rates, Tensor):
            raise TypeError(f"rates must be a torch.Tensor or None, got {type(rates).__name__}")
        if tuple(rates.shape) != (n_neurons, n_labels):
            raise ValueError(
                f"rates must have shape (n_neurons, n_labels) = ({n_neurons}, {n_labels}), got "
                f"{tuple(rates.shape)}"
            )
        rates = rates.to(device=counts.device, dtype=counts.dtype).clone()

    one_hot = nn.functional.one_hot(labels, n_labels).to(counts.dtype)  # (N, C)
    n_per_class = one_hot.sum(0)  # (C,)
    class_sums = counts.t() @ one_hot  # (n_neurons, C)
    present = n_per_class > 0
    class_means = class_sums / n_per_class.clamp_min(1)
    rates = torch.where(present, alpha * rates + class_means, rates)

    total = rates.sum(1, keepdim=True)
    fired = total.squeeze(1) > 0
    assignments = torch.where(fired, rates.argmax(1), torch.full_like(fired, -1, dtype=torch.long))
    proportions = torch.where(total > 0, rates / torch.where(total > 0, total, 1), 0.0)
    return assignments, proportions, rates


def _class_scores(counts: Tensor, weights: Tensor, assigned: Tensor) -> Tensor:
    """Mean of weighted counts over the neurons assigned to each class; -inf for empty classes."""
    n_assigned = assigned.sum(0)  # (C,)
    scores = (counts @ weights) / n_assigned.clamp_min(1)
    return torch.where(n_assigned > 0, scores, float("-inf"))


def all_activity(spikes: Tensor, assignments: Tensor, n_labels: int) -> Tensor:
    """Predict the class whose assigned neurons have the highest mean spike count: the vote of
    Diehl & Cook (2015), Methods, "Training and Classification".

    Args:
        spikes: ``(N_samples, T, n_neurons)`` spikes or ``(N_samples, n_neurons)`` counts.
        assignments: ``(n_neurons,)`` classes from :func:`assign_labels`; -1 (silent neurons)
            and values outside ``[0, n_labels)`` are ignored.
        n_labels: number of classes ``C``.

    Returns:
        ``(N_samples,)`` long predictions. Score of class ``c`` = mean count over the neurons
        assigned to ``c``; classes without assigned neurons score ``-inf`` and are never
        predicted (unless no class has any neuron: then every prediction is 0). Ties go to the
        lowest class index.
    """
    counts = spike_counts(spikes)
    n_labels = _check_n_labels(n_labels)
    assignments = _check_assignments(assignments, counts.shape[1], counts.device)
    assigned = (assignments[:, None] == torch.arange(n_labels, device=counts.device)).to(
        counts.dtype
    )  # (n_neurons, C)
    return _class_scores(counts, assigned, assigned).argmax(1)


def proportion_weighting(
    spikes: Tensor, assignments: Tensor, proportions: Tensor, n_labels: int
) -> Tensor:
    """Predict with spike counts weighted by each neuron's class proportion (BindsNET's vote;
    Diehl & Cook's paper votes with :func:`all_activity`).

    Score of class ``c`` = ``sum_{n assigned to c} counts[:, n] * proportions[n, c]`` divided by
    the number of neurons assigned to ``c``. Empty classes score ``-inf``; ties -> lowest class;
    silent neurons (assignment -1) are ignored.

    Args:
        spikes: ``(N_samples, T, n_neurons)`` spikes or ``(N_samples, n_neurons)`` counts.
        assignments: ``(n_neurons,)`` from :func:`assign_labels`.
        proportions: ``(n_neurons, C)`` from :func:`assign_labels`.
        n_labels: number of classes ``C``.

    Returns:
        ``(N_samples,)`` long predictions.
    """
    counts = spike_counts(spikes)
    n_labels = _check_n_labels(n_labels)
    n_neurons = counts.shape[1]
    assignments = _check_assignments(assignments, n_neurons, counts.device)
    if not isinstance(proportions, Tensor):
        raise TypeError(f"proportions must be a torch.Tensor, got {type(proportions).__name__}")
    if tuple(proportions.shape) != (n_neurons, n_labels):
        raise ValueError(
            f"proportions must have shape (n_neurons, n_labels) = ({n_neurons}, {n_labels}), "
            f"got {tuple(proportions.shape)}"
        )
    proportions = proportions.to(device=counts.device, dtype=counts.dtype)
    assigned = (assignments[:, None] == torch.arange(n_labels, device=counts.device)).to(
        counts.dtype
    )
    return _class_scores(counts, assigned * proportions, assigned).argmax(1)


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Fraction (0..1) of ``predictions`` equal to ``labels`` (both ``(N,)``)."""
    predictions = torch.as_tensor(predictions)
    labels = torch.as_tensor(labels, device=predictions.device)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must have the same shape, got {tuple(predictions.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if predictions.numel() == 0:
        raise ValueError("predictions must not be empty")
    return float((predictions == labels).float().mean())


class LinearReadout(nn.Module):
    """Multinomial logistic regression on (spike-count) features.

    Features are standardised with the mean / std of the training set (stored as buffers) when
    ``standardize=True``, which makes the full-batch optimisation well conditioned for raw spike
    counts.

    Args:
        n_features: input size ``F``.
        n_classes: number of classes ``C``.
        standardize: z-score the features with training-set statistics.

    Inputs are ``(N, F)`` features, or ``(N, T, F)`` spikes which are summed over ``T``.
    """

    def __init__(self, n_features: int, n_classes: int, standardize: bool = True) -> None:
        super().__init__()
        if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"n_features must be a positive int, got {n_features!r}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        self.n_features = n_features
        self.n_classes = n_classes
        self.standardize = bool(standardize)
        self.linear = nn.Linear(n_features, n_classes)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.history: List[float] = []

    def _features(self, features: Tensor) -> Tensor:
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if features.dim() == 3:
            features = features.sum(1)
        if features.dim() != 2 or features.shape[1] != self.n_features:
            raise ValueError(
                f"features must have shape (N, {self.n_features}) or (N, T, {self.n_features}), "
                f"got {tuple(features.shape)}"
            )
        w = self.linear.weight
        return features.to(device=w.device, dtype=w.dtype)

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(N, C)``."""
        x = self._features(features)
        if self.standardize:
            x = (x - self.mean) / self.std
        return self.linear(x)

    def fit(
        self,
        features: Tensor,
        labels: Tensor,
        epochs: int = 100,
        lr: float = 1.0,
        weight_decay: float = 1e-4,
        optimizer: str = "lbfgs",
        seed: Optional[int] = 0,
    ) -> "LinearReadout":
        """Full-batch training with cross-entropy + ``weight_decay/2 * ||W||^2`` (bias excluded).

        Args:
            features: ``(N, F)`` (or ``(N, T, F)``) training features.
            labels: ``(N,)`` integer labels in ``[0, C)``.
            epochs: optimiser steps (LBFGS: each runs up to 20 inner iterations).
            lr: learning rate (1.0 suits LBFGS; use ~0.01-0.1 for Adam).
            weight_decay: L2 penalty coefficient on the weights.
            optimizer: ``"lbfgs"`` or ``"adam"``.
            seed: re-initialises the parameters from this seed first (deterministic result);
                ``None`` keeps the current parameters (warm start).

        Returns:
            ``self``; the loss after every step is in :attr:`history`.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
        x = self._features(features)
        y = _check_labels(labels, x.shape[0], self.n_classes, x.device)
        if x.shape[0] == 0:
            raise ValueError("features must contain at least one sample")

        if seed is not None:
            gen = torch.Generator().manual_seed(int(seed))
            bound = 1.0 / self.n_features**0.5
            with torch.no_grad():
                w = torch.empty(self.linear.weight.shape).uniform_(-bound, bound, generator=gen)
                b = torch.empty(self.linear.bias.shape).uniform_(-bound, bound, generator=gen)
                self.linear.weight.copy_(w)
                self.linear.bias.copy_(b)
        with torch.no_grad():
            if self.standardize:
                self.mean.copy_(x.mean(0))
                std = x.std(0, unbiased=False)
                self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))
            else:
                self.mean.zero_()
                self.std.fill_(1.0)
        xs = (x - self.mean) / self.std

        params = list(self.linear.parameters())
        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS(params, lr=lr, max_iter=20, line_search_fn="strong_wolfe")
        else:
            opt = torch.optim.Adam(params, lr=lr)

        def closure() -> Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(self.linear(xs), y)
            if weight_decay:
                loss = loss + 0.5 * weight_decay * self.linear.weight.pow(2).sum()
            loss.backward()
            return loss

        self.history = []
        was_training = self.training
        self.train()
        with torch.enable_grad():
            for _ in range(epochs):
                loss = opt.step(closure)
                self.history.append(float(loss.detach()))
        self.train(was_training)
        return self

    @torch.no_grad()
    def predict(self, features: Tensor) -> Tensor:
        """Predicted classes ``(N,)`` (long)."""
        return self(features).argmax(1)

    @torch.no_grad()
    def predict_proba(self, features: Tensor) -> Tensor:
        """Class probabilities ``(N, C)``."""
        return self(features).softmax(1)

    def score(self, features: Tensor, labels: Tensor) -> float:
        """Accuracy (fraction in 0..1) on ``features`` / ``labels``."""
        pred = self.predict(features)
        y = _check_labels(labels, pred.shape[0], self.n_classes, pred.device)
        return accuracy(pred, y)

    def extra_repr(self) -> str:
        return (
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"standardize={self.standardize}"
        )
