"""Frozen configuration of a PixNet model, saved with its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

Method = Literal["dense", "spot"]
Semantics = Literal["density", "sum", "mean"]
Loss = Literal["mse_pcc", "poisson", "poisson_pcc"]

#: Version of the saved model format; a model saved with another major version is refused.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """What a trained model is: its genes, units, resolution and architecture.

    Attributes
    ----------
    genes
        Output genes, in channel order.
    encoder
        timm backbone name, ``"hf-hub:<repo>"`` or checkpoint path (see :mod:`pixnet.model.encoder`).
    encoder_weights
        Initial encoder weights when the model was built (``None``, ``"imagenet"`` or a path);
        recorded for provenance, not needed to load the trained model.
    encoder_spec
        The encoder's architecture as resolved when the model was built (timm ``arch``, its
        ``kwargs``, input ``mean`` and ``std``), so a saved model rebuilds without the checkpoint
        or the hub. ``None``: ``encoder`` is a timm name.
    decoder_hidden
        Hidden width of the decoder's feed-forward blocks (the paper's 512).
    decoder_expansion
        Cap each block's hidden width at this multiple of its channels (the usual FFN
        expansion): the fine, high-resolution stages stay cheap. ``None`` keeps 512 everywhere.
    learnable_skip
        Learn the scalar weight of each skip connection (the paper's delta); fixed at 1 if False.
    semantics
        What the map means. ``"density"``: non-negative expected counts per map pixel, so a
        spot's expected counts are the sum over it and normalisation is applied to that sum
        (consistent across spot sizes). ``"sum"``: the paper's Eq. 5, the spot's normalised
        log-expression is the sum of the map over it. ``"mean"``: its mean over the spot.
    map_stride
        Map pixel size in input pixels (the paper resizes the head's output to the image: 1).
    um_per_px
        Micrometres per pixel of the network's input (the working resolution).
    target_sum, log1p
        The normalisation that turns counts into compared values: ``log1p(x / total * target_sum)``
        (:func:`pixnet.model.log_normalize`). ``log1p`` is recorded for the saved format and must be True.
    loss
        ``"mse_pcc"`` (the paper: MSE + pcc_weight * (1 - batch PCC) on normalised values),
        ``"poisson"`` (count likelihood, genes weighted equally), ``"poisson_pcc"`` (both). With
        ``semantics="density"`` the predicted normalised value is what predict reports in ``X``,
        ``E[log1p(x / T * target_sum)]`` under Poisson counts (:func:`pixnet.tl.fit`'s training).
    pcc_weight
        The paper's lambda.
    total_weight
        Weight of a Poisson term on each spot's total count (all genes) in the Poisson losses:
        the gene-weighted likelihood alone leaves totals, which set how expression is spread
        between cells and matrix, loosely constrained.
    method
        ``"dense"`` (PixNet) or ``"spot"``: the spot-regression baseline (a CNN from each spot's
        crop, ``spot_context`` times the spot's side, resized to ``spot_input_px``, to its expression).

    """

    genes: tuple[str, ...]
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    encoder_spec: dict | None = None
    decoder_hidden: int = 512
    decoder_expansion: int | None = 4
    learnable_skip: bool = True
    semantics: Semantics = "density"
    map_stride: int = 4
    um_per_px: float = 0.5
    target_sum: float = 1e4
    log1p: bool = True
    loss: Loss = "mse_pcc"
    pcc_weight: float = 0.5
    total_weight: float = 0.0
    method: Method = "dense"
    spot_input_px: int = 64
    spot_context: float = 2.0
    format_version: int = field(default=FORMAT_VERSION)

    def __post_init__(self):
        object.__setattr__(self, "genes", tuple(str(g) for g in self.genes))
        if not self.genes:
            raise ValueError("A model needs at least one gene.")
        if self.semantics not in ("density", "sum", "mean"):
            raise ValueError(f"semantics must be 'density', 'sum' or 'mean', got {self.semantics!r}.")
        if self.loss not in ("mse_pcc", "poisson", "poisson_pcc"):
            raise ValueError(f"loss must be 'mse_pcc', 'poisson' or 'poisson_pcc', got {self.loss!r}.")
        if self.method not in ("dense", "spot"):
            raise ValueError(f"method must be 'dense' or 'spot', got {self.method!r}.")
        if self.loss != "mse_pcc" and self.semantics != "density":
            raise ValueError(f"loss={self.loss!r} needs expected counts: use semantics='density'.")
        if not self.log1p:
            raise ValueError(
                "log1p=False is not supported: losses, predictions and evaluation all compare log1p-normalised "
                "values. Leave log1p=True."
            )
        if self.um_per_px <= 0 or self.map_stride < 1:
            raise ValueError("um_per_px must be positive and map_stride at least 1.")

    @property
    def n_outputs(self) -> int:
        """Map channels: the genes, plus 'all other genes' in density mode."""
        return len(self.genes) + (1 if self.semantics == "density" and self.method == "dense" else 0)

    @property
    def map_um_per_px(self) -> float:
        """Micrometres per pixel of the map."""
        return self.um_per_px * self.map_stride

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = asdict(self)
        d["genes"] = list(self.genes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`, refusing other format versions."""
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"This model was saved in format version {version!r}; this pixnet reads version {FORMAT_VERSION}. "
                "Load it with the pixnet version that saved it, or retrain."
            )
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"Unknown model config keys {sorted(unknown)}: the file comes from another pixnet version."
            )
        return cls(**d)
