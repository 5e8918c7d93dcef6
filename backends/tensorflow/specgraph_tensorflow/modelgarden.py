"""Model Garden integration: a ``specgraph`` backbone and decoder for ``official.vision`` experiment configs.

After :func:`register`, an experiment config can say::

    backbone: {type: specgraph, specgraph: {spec: spinenet, model_id: '49', min_level: 3, max_level: 7,
                                            stochastic_depth_drop_rate: 0.2}}
    decoder: {type: specgraph, specgraph: {spec: nasfpn, model_id: '3'}}

and ``official.vision.modeling.backbones.factory.build_backbone`` (``decoders.factory.build_decoder``)
builds it (``spec`` is a built-in name or a spec file path; a decoder spec, one that declares
``inputs``, takes the backbone's endpoints of those levels, whatever their channels, and gives the
model config's ``min_level..max_level``). Call :func:`register` before creating experiment configs.

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
from official.vision.configs import decoders as decoder_configs
from official.vision.modeling.backbones import factory
from official.vision.modeling.decoders import factory as decoder_factory

import specgraph
from specgraph import BackendError, Problem

from ._model import SpecgraphModel, compile

__all__ = ["BACKBONE_TYPE", "DECODER_TYPE", "SpecgraphBackbone", "SpecgraphDecoder", "build_specgraph_backbone",
           "build_specgraph_decoder", "register"]

BACKBONE_TYPE = "specgraph"
DECODER_TYPE = "specgraph"
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


@dataclasses.dataclass
class SpecgraphDecoder(hyperparams.Config):
    """The ``specgraph`` member of Model Garden's ``Decoder`` one-of config: a decoder spec (one with ``inputs``);
    its levels are the model config's ``min_level..max_level``."""

    spec: str = "fpn"
    model_id: str | None = None  # the spec's variant; None = the spec's default
    activation: str | None = None  # overrides of the spec's own settings; None = the spec's
    norm_momentum: float | None = None
    norm_epsilon: float | None = None


def _settings(cfg: Any, plan: specgraph.Plan, norm_activation_config: Any, where: str) -> dict[str, Any]:
    """The activation and norm settings to build with: the spec's, or the config's overrides; each must be what
    Model Garden's ``norm_activation`` says (its other parts read it too), else a BackendError naming both."""
    settings = {"activation": (cfg.activation, plan.activation),
                "norm_momentum": (cfg.norm_momentum, plan.norm_momentum),
                "norm_epsilon": (cfg.norm_epsilon, plan.norm_epsilon)}
    chosen = {key: spec_value if override is None else override for key, (override, spec_value) in settings.items()}
    contradictions = [
        Problem(f"Model Garden's norm_activation.{key} is {getattr(norm_activation_config, key)!r} but the "
                f"{f'{where} config' if settings[key][0] is not None else f'spec {plan.spec_name!r}'} says "
                f"{value!r}; set norm_activation.{key}: {value!r}, or {where}.specgraph.{key} to override the spec",
                f"norm_activation.{key}")
        for key, value in chosen.items() if getattr(norm_activation_config, key) != value]
    if contradictions:
        raise BackendError(contradictions)
    return chosen


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
    chosen = _settings(cfg, plan, norm_activation_config, "backbone")
    return compile(plan, spec=spec, input_shape=(height, width, channels), **chosen,
                   use_sync_bn=norm_activation_config.use_sync_bn,
                   stochastic_depth_drop_rate=cfg.stochastic_depth_drop_rate,
                   kernel_regularizer=l2_regularizer, **kwargs)


def build_specgraph_decoder(input_specs: Any, model_config: Any, l2_regularizer: Any = None,
                            **kwargs: Any) -> SpecgraphModel:
    """Model Garden decoder builder (the signature ``decoders.factory.build_decoder`` calls): the decoder spec on
    the backbone's endpoints (``input_specs``, {level: shape}), each declared input given that endpoint's
    channels."""
    cfg = model_config.decoder.get()
    spec = specgraph.load(cfg.spec)
    if not spec.inputs:
        raise BackendError(Problem(f"spec {spec.name!r} takes images (it has a stem); a decoder spec declares the "
                                   "feature maps it takes (`inputs`), e.g. fpn, nasfpn, bifpn",
                                   "decoder.specgraph.spec"))
    missing = [str(given.level) for given in spec.inputs if str(given.level) not in input_specs]
    if missing:
        raise BackendError(Problem(f"{spec.name!r} takes level(s) {', '.join(missing)}; the backbone gives "
                                   f"{', '.join(sorted(input_specs, key=int))}", "decoder.specgraph.spec"))
    data = spec.to_dict()  # the backbone's channels in place of the declared ones
    for given in data["inputs"]:
        given["filters"] = int(input_specs[str(given["level"])][-1])
    spec = specgraph.load(data)
    finest = min(spec.inputs, key=lambda given: given.level)
    shape = list(input_specs[str(finest.level)])
    size = tuple(s * 2**finest.level if s else DEFAULT_PLAN_SIZE for s in shape[1:3])
    variant = None if cfg.model_id is None else str(cfg.model_id)
    plan = specgraph.plan(spec, variant, size, model_config.min_level, model_config.max_level)
    chosen = _settings(cfg, plan, model_config.norm_activation, "decoder")
    return compile(plan, spec=spec, **chosen, use_sync_bn=model_config.norm_activation.use_sync_bn,
                   kernel_regularizer=l2_regularizer, **kwargs)


def _extend_config(cls: Any, key: str, member: type) -> None:
    """Add a ``key`` field of type ``member`` to the one-of config ``cls`` so configs accept ``type: key``."""
    if key in cls.__annotations__:
        return
    # Config resolves sub-config types from the class annotations (typing.get_type_hints).
    cls.__annotations__[key] = member
    original = cls.__post_init__

    def __post_init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # Every instance gets a default member, as a dataclass field would give it.
        self.__dict__.setdefault(key, member())
        original(self, *args, **kwargs)

    cls.__post_init__ = __post_init__


def register() -> None:
    """Register the ``specgraph`` backbone and decoder with Model Garden (idempotent)."""
    _extend_config(backbone_configs.Backbone, BACKBONE_TYPE, SpecgraphBackbone)
    _extend_config(decoder_configs.Decoder, DECODER_TYPE, SpecgraphDecoder)
    if BACKBONE_TYPE not in factory._REGISTERED_BACKBONE_CLS:
        factory.register_backbone_builder(BACKBONE_TYPE)(build_specgraph_backbone)
    if DECODER_TYPE not in decoder_factory._REGISTERED_DECODER_CLS:
        decoder_factory.register_decoder_builder(DECODER_TYPE)(build_specgraph_decoder)
