"""Model Garden integration: a ``specgraph`` backbone for ``official.vision`` experiment configs.

After :func:`register`, an experiment config can say::

    backbone: {type: specgraph, specgraph: {spec: spinenet, model_id: '49', min_level: 3, max_level: 7,
                                            stochastic_depth_drop_rate: 0.2}}

and ``official.vision.modeling.backbones.factory.build_backbone`` builds it (``spec`` is a
built-in name or a spec file path). Call :func:`register` before creating experiment configs.

The spec decides the activation and the batch-norm settings. Model Garden's
``norm_activation`` must agree with them (its decoder and head read it too); where it does
not, building fails and says so, rather than building another network than the spec's. To
train a spec with other settings (e.g. SpineNet with swish, as Model Garden's RetinaNet
recipes do), say so in the backbone config (``activation: swish``) and in ``norm_activation``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from official.modeling import hyperparams
from official.vision.configs import backbones as backbone_configs
from official.vision.modeling.backbones import factory

import specgraph
from specgraph import BackendError, Problem

from ._model import SpecgraphModel, compile

__all__ = ["BACKBONE_TYPE", "SpecgraphBackbone", "build_specgraph_backbone", "register"]

BACKBONE_TYPE = "specgraph"
# Planning size when the input spec leaves H or W open (the model itself accepts any size).
DEFAULT_PLAN_SIZE = 640


@dataclasses.dataclass
class SpecgraphBackbone(hyperparams.Config):
    """The ``specgraph`` member of Model Garden's ``Backbone`` one-of config."""

    spec: str = "spinenet"
    model_id: str | None = None  # the spec's variant; None = the spec's default
    min_level: int = 3
    max_level: int = 7
    stochastic_depth_drop_rate: float = 0.0
    # Overrides of the spec's own settings; None = the spec's.
    activation: str | None = None
    norm_momentum: float | None = None
    norm_epsilon: float | None = None


def build_specgraph_backbone(input_specs: Any, backbone_config: Any, norm_activation_config: Any,
                             l2_regularizer: Any = None, **kwargs: Any) -> SpecgraphModel:
    """Model Garden backbone builder (the signature ``factory.build_backbone`` calls)."""
    cfg = backbone_config.get()
    shape = list(input_specs.shape)
    height, width, channels = shape[1], shape[2], shape[3] or 3
    size = (height, width) if height and width else (DEFAULT_PLAN_SIZE, DEFAULT_PLAN_SIZE)
    spec = specgraph.load(cfg.spec)
    variant = None if cfg.model_id is None else str(cfg.model_id)
    plan = specgraph.plan(spec, variant, size, cfg.min_level, cfg.max_level, input_channels=channels)
    settings = {"activation": (cfg.activation, plan.activation),
                "norm_momentum": (cfg.norm_momentum, plan.norm_momentum),
                "norm_epsilon": (cfg.norm_epsilon, plan.norm_epsilon)}
    chosen = {key: spec_value if override is None else override for key, (override, spec_value) in settings.items()}
    contradictions = [
        Problem(f"Model Garden's norm_activation.{key} is {getattr(norm_activation_config, key)!r} but the "
                f"{'backbone config' if settings[key][0] is not None else f'spec {plan.spec_name!r}'} says "
                f"{value!r}; set norm_activation.{key}: {value!r}, or backbone.specgraph.{key} to override the spec",
                f"norm_activation.{key}")
        for key, value in chosen.items() if getattr(norm_activation_config, key) != value]
    if contradictions:
        raise BackendError(contradictions)
    return compile(plan, spec=spec, input_shape=(height, width, channels), **chosen,
                   use_sync_bn=norm_activation_config.use_sync_bn,
                   stochastic_depth_drop_rate=cfg.stochastic_depth_drop_rate,
                   kernel_regularizer=l2_regularizer, **kwargs)


def _extend_backbone_config() -> None:
    """Add a ``specgraph`` field to ``backbones.Backbone`` so configs accept ``type: specgraph``."""
    cls = backbone_configs.Backbone
    if BACKBONE_TYPE in cls.__annotations__:
        return
    # Config resolves sub-config types from the class annotations (typing.get_type_hints).
    cls.__annotations__[BACKBONE_TYPE] = SpecgraphBackbone
    original = cls.__post_init__

    def __post_init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # Every instance gets a default member, as a dataclass field would give it.
        self.__dict__.setdefault(BACKBONE_TYPE, SpecgraphBackbone())
        original(self, *args, **kwargs)

    cls.__post_init__ = __post_init__


def register() -> None:
    """Register the ``specgraph`` backbone with Model Garden (idempotent)."""
    _extend_backbone_config()
    if BACKBONE_TYPE not in factory._REGISTERED_BACKBONE_CLS:
        factory.register_backbone_builder(BACKBONE_TYPE)(build_specgraph_backbone)
