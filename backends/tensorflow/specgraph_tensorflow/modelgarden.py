"""Model Garden integration: a ``specgraph`` backbone for ``official.vision`` experiment configs.

After :func:`register`, an experiment config can say::

    backbone: {type: specgraph, specgraph: {spec: spinenet, model_id: '49', min_level: 3, max_level: 7,
                                            stochastic_depth_drop_rate: 0.2}}

and ``official.vision.modeling.backbones.factory.build_backbone`` builds it (``spec`` is a
built-in name or a spec file path). Call :func:`register` before creating experiment configs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from official.modeling import hyperparams
from official.vision.configs import backbones as backbone_configs
from official.vision.modeling.backbones import factory

import specgraph

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
    return compile(plan, spec=spec, input_shape=(height, width, channels),
                   activation=norm_activation_config.activation,
                   use_sync_bn=norm_activation_config.use_sync_bn,
                   norm_momentum=norm_activation_config.norm_momentum,
                   norm_epsilon=norm_activation_config.norm_epsilon,
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
