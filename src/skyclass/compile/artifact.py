"""What the compile step produces: library bytes plus everything needed to trust and use them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from skyclass.errors import CompileError

OUTPUT_TRANSFORMS = ("identity", "binary_expand", "raw_score")
"""How the raw outputs of a library's ``predict`` become class probabilities.

``identity``
    One output per class; the library's post-processor (softmax for gradient
    boosting, tree averaging for forests) already yields the probabilities.
``binary_expand``
    One output ``p`` (sigmoid of a binary gradient-boosting model), the
    probability of the second class: probabilities are ``[1 - p, p]``.
``raw_score``
    The outputs are scores, not probabilities (an OOD forest's anomaly score,
    task ``anomaly``): no classes; ``skyclass.predict_raw`` reads them.
"""


@dataclass(frozen=True)
class CompiledArtifact:
    """A compiled model: the shared library, its hash, its output layout and its provenance.

    ``library`` is what goes into ``skyclass.model_artifact.library``;
    ``checkpoint`` is the Treelite checkpoint it was built from (data, not
    code: rebuild with :func:`skyclass.compile.compile_checkpoint`).
    ``n_outputs`` raw outputs become ``n_classes`` probabilities through
    ``output_transform`` (:data:`OUTPUT_TRANSFORMS`).
    """

    library: bytes = field(repr=False)
    sha256_hex: str
    n_features: int
    n_outputs: int
    n_classes: int
    output_transform: str
    checkpoint: bytes = field(repr=False)
    treelite_version: str
    tl2cgen_version: str
    compiler: str
    compiler_flags: str
    compile_seconds: float
    build_log: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if hashlib.sha256(self.library).hexdigest() != self.sha256_hex:
            raise CompileError("library bytes do not match sha256_hex")
        if self.output_transform not in OUTPUT_TRANSFORMS:
            raise CompileError(
                f"unknown output transform {self.output_transform!r}; use one of "
                f"{OUTPUT_TRANSFORMS}"
            )
        if self.output_transform == "raw_score":
            if self.n_classes != 0 or self.n_outputs < 1:
                raise CompileError(
                    f"a raw_score library has outputs and no classes, not {self.n_outputs} "
                    f"outputs and {self.n_classes} classes"
                )
            return
        expected = 1 if self.output_transform == "binary_expand" else self.n_classes
        if self.n_outputs != expected or self.n_classes < 2:
            raise CompileError(
                f"{self.n_outputs} outputs cannot give {self.n_classes} classes "
                f"with transform {self.output_transform}"
            )

    @property
    def sha256(self) -> bytes:
        """The sha256 of ``library`` as 32 bytes (the ``sha256 bytea`` column)."""
        return bytes.fromhex(self.sha256_hex)

    def to_probabilities(self, raw: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Class probabilities (n x n_classes) from raw library outputs (n x n_outputs)."""
        out = np.asarray(raw, dtype=np.float64)
        if out.ndim != 2 or out.shape[1] != self.n_outputs:
            raise CompileError(
                f"raw outputs have shape {out.shape}, expected (n, {self.n_outputs})"
            )
        if self.output_transform == "raw_score":
            raise CompileError("a raw_score library gives scores, not class probabilities")
        if self.output_transform == "binary_expand":
            return np.column_stack([1.0 - out[:, 0], out[:, 0]])
        return out
