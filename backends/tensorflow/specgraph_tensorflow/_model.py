"""The Keras model class and the backend's ``compile(plan, **options)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

import specgraph
from specgraph import ArgumentError, BackendError, Plan, Spec
from specgraph.backend_api import (
    COMMON_OPTIONS,
    FeatureInfo,
    check_memory,
    check_options,
    check_plan_matches,
    levels_of,
)

from ._build import build_graph, layer_names
from ._layers import XLA_DEPTHWISE, LayerOptions, activation_fn

__all__ = ["OPTIONS", "SpecgraphModel", "build", "compile", "xla_function"]

# The shared options (Model Garden's names, validated in the core) and this backend's own.
OPTIONS = (*COMMON_OPTIONS, "spec", "input_shape", "input_specs", "min_level", "max_level", "levels",
           "kernel_initializer", "kernel_regularizer", "bias_regularizer", "xla_depthwise", "name")


def _recover_spec(plan: Plan) -> Spec | None:
    """The built-in spec ``plan`` came from, when re-planning it gives the same plan."""
    try:
        spec = specgraph.load(plan.spec_name)
        again = specgraph.plan(spec, plan.variant, plan.input_size, plan.min_level, plan.max_level,
                               plan.input_channels, levels=levels_of(plan))
    except specgraph.SpecgraphError:  # not a built-in spec, or no longer plannable: keep the plan itself
        return None
    return spec if again.hash == plan.hash else None


def _as_spec(spec: Spec | Mapping[str, Any] | str | None) -> Spec | None:
    if spec is None or isinstance(spec, Spec):
        return spec
    return specgraph.load(dict(spec) if isinstance(spec, Mapping) else spec)


@tf_keras.utils.register_keras_serializable(package="specgraph")
class SpecgraphModel(tf_keras.Model):
    """A specgraph plan as a ``tf_keras`` functional model: ``model(images)`` -> ``{"3": ..., "7": ...}`` (NHWC).

    ``get_config()`` holds the spec (or, for a plan of unknown origin, the plan itself),
    so ``from_config`` and Keras SavedModel loading rebuild the same network.
    """

    def __init__(self, plan: Plan, *, spec: Spec | Mapping[str, Any] | str | None = None,
                 input_shape: Sequence[int | None] | None = None, activation: str | None = None,
                 stochastic_depth_drop_rate: float = 0.0, norm_momentum: float | None = None,
                 norm_epsilon: float | None = None, use_sync_bn: bool = False,
                 kernel_initializer: Any = "VarianceScaling", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, xla_depthwise: str = "shifted", frozen_bn: bool = False,
                 freeze_at: int = 0, **kwargs: Any) -> None:
        if xla_depthwise not in XLA_DEPTHWISE:
            raise BackendError(f"xla_depthwise={xla_depthwise!r}: need one of {', '.join(XLA_DEPTHWISE)}")
        check_options({"frozen_bn": frozen_bn, "freeze_at": freeze_at}, "SpecgraphModel()", plan=plan)
        spec = _as_spec(spec)
        if spec is not None:
            again = specgraph.plan(spec, plan.variant, plan.input_size, plan.min_level, plan.max_level,
                                   plan.input_channels, levels=levels_of(plan))
            if again.hash != plan.hash:
                raise BackendError(f"the spec given ({spec.name}) does not plan to this plan ({plan.spec_name} "
                                   f"variant {plan.variant})")
        shape = tuple(input_shape) if input_shape is not None else (None, None, plan.input_channels)
        if len(shape) != 3 or shape[2] != plan.input_channels:
            raise BackendError(f"input_shape {shape}: need (H, W, {plan.input_channels}) (H, W may be None)")
        activation = activation or plan.activation
        activation_fn(activation)  # fail early on an unknown name
        options = LayerOptions(
            activation=activation,
            norm_momentum=plan.norm_momentum if norm_momentum is None else norm_momentum,
            norm_epsilon=plan.norm_epsilon if norm_epsilon is None else norm_epsilon,
            use_sync_bn=use_sync_bn,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=tf_keras.regularizers.get(kernel_regularizer),
            bias_regularizer=tf_keras.regularizers.get(bias_regularizer),
            xla_depthwise=xla_depthwise,
        )
        image: Any = tf_keras.Input(shape=shape, name="image")
        if plan.inputs:  # a decoder: its feature maps by level, as a backbone's outputs
            image = {level: tf_keras.Input(shape=(None, None, plan.node(name).channels), name=f"level_{level}")
                     for level, name in plan.inputs}
        outputs, slots = build_graph(plan, image, options, float(stochastic_depth_drop_rate), frozen_bn=frozen_bn,
                                     freeze_at=freeze_at)
        kwargs.setdefault("name", f"{plan.spec_name}_{plan.variant}".replace(".", "_"))
        super().__init__(inputs=image, outputs=outputs, **kwargs)
        self._plan = plan
        self._spec = spec
        self._layer_options = options
        self._drop_rate = float(stochastic_depth_drop_rate)
        self._input_shape_arg = shape
        self._slots = slots
        self._output_specs = {level: t.get_shape() for level, t in outputs.items()}
        self._frozen_bn, self._freeze_at = frozen_bn, freeze_at

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def spec(self) -> Spec | None:
        return self._spec

    @property
    def stochastic_depth_drop_rate(self) -> float:
        return self._drop_rate

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """``{level: shape}`` like Model Garden backbones (decoders read it)."""
        return self._output_specs

    @property
    def feature_info(self) -> FeatureInfo:
        """Per output, in order: ``Feature(level, channels, stride, node)``; timm's ``channels()``,
        ``reduction()``, ``module_name()`` (the layer producing it, ``endpoint_3_op0``) and ``levels()``."""
        names = layer_names(self._plan)
        return FeatureInfo(self._plan, [f"{names[name]}_op{len(self._plan.node(name).ops) - 1}"
                                        for _, name in self._plan.endpoints])

    @property
    def frozen_bn(self) -> bool:
        return self._frozen_bn

    @property
    def freeze_at(self) -> int:
        return self._freeze_at

    @property
    def slots(self) -> dict[str, tf_keras.layers.Layer]:
        """Weight-bearing layers by structural key (``sp3/in0/op0``, ``sp3/unit0``), in build order."""
        return self._slots

    def get_config(self) -> dict[str, Any]:
        o, p = self._layer_options, self._plan
        config: dict[str, Any] = {
            "spec": self._spec.to_dict() if self._spec is not None else None,
            "plan": None if self._spec is not None else p.to_dict(),
            "variant": p.variant, "input_size": list(p.input_size), "input_channels": p.input_channels,
            "min_level": p.min_level, "max_level": p.max_level, "levels": list(levels_of(p)),
            "input_shape": list(self._input_shape_arg),
            "activation": o.activation, "stochastic_depth_drop_rate": self._drop_rate,
            "norm_momentum": o.norm_momentum, "norm_epsilon": o.norm_epsilon, "use_sync_bn": o.use_sync_bn,
            "kernel_initializer": tf_keras.initializers.serialize(tf_keras.initializers.get(o.kernel_initializer)),
            "kernel_regularizer": tf_keras.regularizers.serialize(o.kernel_regularizer)
            if o.kernel_regularizer is not None else None,
            "bias_regularizer": tf_keras.regularizers.serialize(o.bias_regularizer)
            if o.bias_regularizer is not None else None,
            "xla_depthwise": o.xla_depthwise,
            "frozen_bn": self._frozen_bn, "freeze_at": self._freeze_at,
            "name": self.name,
        }
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SpecgraphModel:
        config = dict(config)
        spec_data, plan_data = config.pop("spec", None), config.pop("plan", None)
        variant, input_size = config.pop("variant"), tuple(config.pop("input_size"))
        lo, hi, channels = config.pop("min_level"), config.pop("max_level"), config.pop("input_channels", 3)
        levels = config.pop("levels", None)  # configs written before level selection have none: min..max
        if spec_data is not None:
            spec = specgraph.load(spec_data)
            plan = specgraph.plan(spec, variant, input_size, lo, hi, channels, levels=levels)
        elif plan_data is not None:
            spec, plan = None, Plan.from_dict(plan_data)
        else:
            raise BackendError("config has neither a spec nor a plan")
        if config.get("kernel_initializer") is not None:
            config["kernel_initializer"] = tf_keras.initializers.deserialize(config["kernel_initializer"])
        for key in ("kernel_regularizer", "bias_regularizer"):
            if config.get(key) is not None:
                config[key] = tf_keras.regularizers.deserialize(config[key])
        return cls(plan, spec=spec, **config)


def compile(plan: Plan, *, spec: Spec | Mapping[str, Any] | str | None = None,  # noqa: A001 - the protocol's name
            **options: Any) -> SpecgraphModel:
    """Lower ``plan`` to a :class:`SpecgraphModel`. Options follow Model Garden's SpineNet builder;
    ``spec`` (passed by ``specgraph.compile`` when it planned a spec) is kept in the model's config.
    ``min_level``, ``max_level`` and ``levels`` must match the plan (plan with ``levels=[3, 5]`` to
    select outputs); ``frozen_bn`` and ``freeze_at`` freeze batch norms and the first nodes."""
    if not isinstance(plan, Plan):
        raise ArgumentError(f"compile(plan): the tensorflow backend compiles a Plan, got {type(plan).__name__}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BackendError(f"tensorflow backend: unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    check_options(options, plan=plan)
    check_plan_matches(plan, **{key: options.pop(key, None) for key in ("min_level", "max_level", "levels")})
    if options.pop("check_memory", True):
        check_memory(plan)
    input_specs = options.pop("input_specs", None)
    if input_specs is not None:
        if options.get("input_shape") is not None:
            raise BackendError("give input_shape or input_specs, not both")
        options["input_shape"] = tuple(input_specs.shape[1:])
    spec = _as_spec(spec) if spec is not None else _recover_spec(plan)
    return SpecgraphModel(plan, spec=spec, **options)


def build(spec: Spec | Mapping[str, Any] | str, variant: str | None = None,
          input_size: int | Sequence[int] | str = (640, 640), min_level: int | None = None,
          max_level: int | None = None, *, levels: Sequence[int] | None = None, **options: Any) -> SpecgraphModel:
    """Plan ``spec`` (a Spec, a dict, a built-in name or a spec file) and compile it, keeping the spec for
    ``get_config`` (``specgraph.compile`` hands backends the plan only)."""
    spec = _as_spec(spec)
    plan = specgraph.plan(spec, variant, input_size, min_level, max_level, levels=levels)
    return compile(plan, spec=spec, **options)


def xla_function(model: tf_keras.Model, *, training: bool = False) -> Any:
    """``model(images, training=training)`` as a ``tf.function(jit_compile=True)``.

    Under XLA compilation a :class:`SpecgraphModel` built with ``xla_depthwise="shifted"`` (the
    default) computes its depthwise convs as k*k shifted multiply-adds, which XLA's CPU backend
    fuses (its own depthwise conv is ~10x slower there); weights and results are the same
    (≤ 1e-6 relative). Any ``tf.function(..., jit_compile=True)`` around the model does the same;
    this is the shorthand.
    """
    ArgumentError.expect(model, tf_keras.Model, "model", "a Keras model")
    return tf.function(lambda images: model(images, training=training), jit_compile=True)
