"""Pure tensor functions behind pysnn's modules: no state, no modules.

Each neuron model's step lives in the file named after it, with its equations in the docstring.
The fused CPU kernels (:mod:`pysnn.native`) are called from here only, never from modules.
"""

from pysnn.functional.decay import exp_decay
from pysnn.functional.delay import delayed, push_history, synapse_index
from pysnn.functional.izhikevich import IzhikevichParameters, izhikevich_step
from pysnn.functional.lif import (
    LIFParameters,
    adaptive_theta_step,
    lif_parameters,
    lif_step,
    lif_trace_step,
    lif_trace_steps,
)
from pysnn.functional.linear import delay_queue_step, linear_dense, linear_event
from pysnn.functional.spike import spike
from pysnn.functional.trace import TRACE_MODES, TraceParameters, trace_parameters, trace_step

__all__ = [
    "IzhikevichParameters",
    "LIFParameters",
    "TRACE_MODES",
    "TraceParameters",
    "adaptive_theta_step",
    "delay_queue_step",
    "delayed",
    "exp_decay",
    "izhikevich_step",
    "lif_parameters",
    "lif_step",
    "lif_trace_step",
    "lif_trace_steps",
    "linear_dense",
    "linear_event",
    "push_history",
    "spike",
    "synapse_index",
    "trace_parameters",
    "trace_step",
]
