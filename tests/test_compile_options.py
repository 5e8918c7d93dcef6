"""Output level selection, frozen batch norm, stage freezing and feature_info, in both backends.

Every expectation is independent of the code under test: node lists and channel / stride
figures are read off SpineNet-49S's plan table by hand, outputs of a level selection are
compared with the full model's (same weights), frozen weights with their values before a
training step, parameter counts with ``specgraph.stats``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import specgraph

SIZE = 128
BACKENDS = ["torch", "tensorflow"]
# SpineNet-49S at 128x128 (plan.table()): sp12 is the level-3 output, sp13 level 5, sp11 level 4,
# sp15 level 6, sp14 level 7; sp16 (level 2) is pruned already. Levels [3, 5] need neither sp14
# nor sp15 (they feed only endpoints 6 and 7), so those go with endpoints 4, 6 and 7.
NOT_BUILT_FOR_3_5 = {"sp14", "sp15", "endpoint_4", "endpoint_6", "endpoint_7"}
FIRST_NODES = ["stem", "stem1", "stem2", "sp1", "sp2"]  # plan order, from plan.table()


class Backend:
    """The contract hooks (``specgraph.backend_api.ConformingBackend``: structural weights, inference on
    NCHW numpy), plus the training-mode operations these tests need, in each backend's own API."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.plugin = specgraph.get_backend(name)
        if name == "torch":
            import torch

            self.torch = torch
            torch.set_num_threads(1)
        else:
            import tensorflow

            self.tf = tensorflow

    def build(self, plan: specgraph.Plan, seed: int = 0, **options: Any) -> Any:
        if self.name == "torch":
            self.torch.manual_seed(seed)
        else:
            self.tf.random.set_seed(seed)
        return specgraph.compile(plan, backend=self.name, **options)

    def run(self, model: Any, x: np.ndarray, training: bool = False) -> dict[str, np.ndarray]:
        if not training:
            return self.plugin.predict(model, x)
        if self.name == "torch":
            model.train()
            with self.torch.no_grad():
                return {k: v.numpy() for k, v in model(self.torch.from_numpy(x)).items()}
        out = model(x.transpose(0, 2, 3, 1), training=True)
        return {k: v.numpy().transpose(0, 3, 1, 2) for k, v in out.items()}

    def weights(self, model: Any) -> dict[str, np.ndarray]:
        """Every weight and BN statistic by shared name, copied."""
        return {k: np.array(v, copy=True) for k, v in self.plugin.to_structural(model).items()}

    def load(self, model: Any, arrays: dict[str, np.ndarray], **kwargs: Any) -> Any:
        return self.plugin.load_structural(model, arrays, **kwargs)

    def counts(self, model: Any) -> tuple[int, int]:
        """(all weights incl. BN statistics, trainable ones), as stats counts them."""
        if self.name == "torch":
            trainable = sum(p.numel() for p in model.parameters())
            stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
            return trainable + stats, trainable
        return model.count_params(), sum(int(np.prod(v.shape)) for v in model.trainable_weights)

    def trainable(self, model: Any) -> set[str]:
        """Shared names of the weights that train."""
        if self.name == "torch":
            names = {k: self.plugin.structural_name(k) for k in model.state_dict()}
            return {names[k] for k, p in model.named_parameters() if p.requires_grad}
        ids = {id(v) for v in model.trainable_weights}
        return {k for k, v in self.plugin.weights_dict(model).items() if id(v) in ids}

    def train_step(self, model: Any, x: np.ndarray) -> None:
        """One SGD step on the mean square of every output, in training mode."""
        if self.name == "torch":
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = self.torch.optim.SGD(params, lr=0.5)
            loss = sum((v**2).mean() for v in model(self.torch.from_numpy(x)).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return
        tf = self.tf
        with tf.GradientTape() as tape:
            out = model(x.transpose(0, 2, 3, 1), training=True)
            loss = tf.add_n([tf.reduce_mean(v**2) for v in out.values()])
        grads = tape.gradient(loss, model.trainable_weights)
        for v, g in zip(model.trainable_weights, grads, strict=True):
            v.assign_sub(0.5 * g)

    def randomize(self, model: Any, seed: int) -> None:
        """Non-trivial BN statistics and affine parameters (batch and running statistics then differ)."""
        rng = np.random.default_rng(seed)
        arrays = self.weights(model)
        for name, a in arrays.items():
            role = name.rsplit("/", 1)[-1]
            if role in ("moving_mean", "beta"):
                arrays[name] = rng.normal(0.0, 0.1, a.shape).astype(a.dtype)
            elif role in ("moving_variance", "gamma"):
                arrays[name] = rng.uniform(0.5, 1.5, a.shape).astype(a.dtype)
        self.load(model, arrays)


def _node(name: str) -> str:
    return name.split("/", 1)[0]  # SpineNet's node names hold no "/"


@pytest.fixture(scope="module")
def plans() -> dict[str, specgraph.Plan]:
    spec = specgraph.load("spinenet")
    return {"full": specgraph.plan(spec, "49S", SIZE), "3_5": specgraph.plan(spec, "49S", SIZE, levels=[3, 5])}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


@pytest.fixture(scope="module")
def models(backend: Backend, plans: dict[str, specgraph.Plan]) -> dict[str, Any]:
    """A full SpineNet-49S (random BN statistics) and a levels=[3, 5] one holding the same weights."""
    full = backend.build(plans["full"], seed=1)
    backend.randomize(full, seed=1)
    selected = specgraph.compile("spinenet", backend=backend.name, variant="49S", input_size=SIZE, levels=[3, 5])
    backend.load(selected, backend.weights(full), strict=False)
    return {"full": full, "3_5": selected}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)


# --- level selection -------------------------------------------------------------------------


def test_a_level_selection_plans_only_what_those_levels_need(plans: dict[str, specgraph.Plan]) -> None:
    full, sel = plans["full"], plans["3_5"]
    assert sel.endpoints == (("3", "endpoint_3"), ("5", "endpoint_5"))
    assert (sel.min_level, sel.max_level) == (3, 5)
    assert {n.name for n in full.nodes} - {n.name for n in sel.nodes} == NOT_BUILT_FOR_3_5
    assert set(sel.pruned) == {"sp14", "sp15", "sp16"}  # blocks only; unrequested endpoints are not built
    assert specgraph.stats(sel).params < specgraph.stats(full).params
    # The same network as min_level/max_level when the selection is contiguous; any order, same plan.
    spec = specgraph.load("spinenet")
    assert specgraph.plan(spec, "49S", SIZE, levels=[3, 4, 5, 6, 7]).hash == full.hash
    assert specgraph.plan(spec, "49S", SIZE, levels=(5, 3)).hash == sel.hash
    # min_level / max_level bound a selection.
    assert specgraph.plan(spec, "49S", SIZE, 3, 6, levels=[3, 5]).hash == sel.hash


def test_null_backend_gets_the_selected_plan() -> None:
    model = specgraph.compile("spinenet", backend="null", variant="49S", input_size=SIZE, levels=[4, 6])
    assert model((1, 3, SIZE, SIZE)) == {"4": (1, 128, 8, 8), "6": (1, 128, 2, 2)}


def test_selected_levels_equal_the_full_model(backend: Backend, models: dict[str, Any], image: np.ndarray,
                                              plans: dict[str, specgraph.Plan]) -> None:
    full, sel = backend.run(models["full"], image), backend.run(models["3_5"], image)
    assert list(sel) == ["3", "5"] and list(full) == ["3", "4", "5", "6", "7"]
    for level in ("3", "5"):
        assert sel[level].shape == full[level].shape
        np.testing.assert_allclose(sel[level], full[level], rtol=0, atol=1e-6)
    counts, full_counts = backend.counts(models["3_5"]), backend.counts(models["full"])
    stats = specgraph.stats(plans["3_5"])
    assert counts == (stats.params, stats.trainable_params)
    assert counts[0] < full_counts[0] and counts[1] < full_counts[1]
    assert full_counts == (specgraph.stats(plans["full"]).params, specgraph.stats(plans["full"]).trainable_params)


def test_levels_pass_through_every_compile(backend: Backend, plans: dict[str, specgraph.Plan]) -> None:
    # With a plan, levels (like min_level / max_level) must agree with it.
    backend.plugin.compile(plans["3_5"], levels=[5, 3], min_level=3, check_memory=False)
    with pytest.raises(specgraph.BackendError, match=r"levels=\[3, 4\] does not match the plan's levels \[3, 5\]"):
        backend.plugin.compile(plans["3_5"], levels=[3, 4])
    with pytest.raises(specgraph.BackendError, match="levels"):
        specgraph.compile(plans["full"], backend=backend.name, levels=[3, 5])
    with pytest.raises(specgraph.BackendError, match="max_level=7 does not match"):
        specgraph.compile(plans["3_5"], backend=backend.name, max_level=7)


@pytest.mark.parametrize(("levels", "error", "where"), [
    ("3", specgraph.ArgumentError, "levels"),
    (5, specgraph.ArgumentError, "levels"),
    ([], specgraph.ArgumentError, "levels"),
    ([3, "5"], specgraph.ArgumentError, "levels[1]"),
    ([3, True], specgraph.ArgumentError, "levels[1]"),
    ([3, 3], specgraph.ArgumentError, "levels"),
    ([3, 99], specgraph.ArgumentError, "levels[1]"),
    ([1, 3], specgraph.PlanError, "no output block at level 1"),
])
def test_bad_levels(levels: Any, error: type, where: str) -> None:
    with pytest.raises(error) as caught:
        specgraph.plan("spinenet", "49S", SIZE, levels=levels)
    if error is specgraph.ArgumentError:
        assert caught.value.problems[0].path == where  # located: the argument, or the bad item in it
    else:
        assert where in str(caught.value)
    with pytest.raises(error):
        specgraph.compile("spinenet", backend="null", variant="49S", input_size=SIZE, levels=levels)


def test_levels_outside_min_and_max_level() -> None:
    with pytest.raises(specgraph.PlanError, match=r"level\(s\) 3 outside min_level..max_level 4.."):
        specgraph.plan("spinenet", "49S", SIZE, min_level=4, levels=[3, 5])


# --- frozen batch norm and freeze_at -------------------------------------------------------------


def _bn(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in ("gamma", "beta", "moving_mean", "moving_variance")


def test_frozen_bn_uses_running_statistics_and_does_not_train(backend: Backend, plans: dict[str, specgraph.Plan],
                                                              image: np.ndarray) -> None:
    model = backend.build(plans["3_5"], seed=2, frozen_bn=True)
    backend.randomize(model, seed=2)
    before = backend.weights(model)
    assert not any(_bn(name) for name in backend.trainable(model))
    train, infer = backend.run(model, image, training=True), backend.run(model, image, training=False)
    for level in train:
        np.testing.assert_allclose(train[level], infer[level], rtol=0, atol=1e-6)
    backend.train_step(model, image)
    after = backend.weights(model)
    assert all(np.array_equal(after[k], before[k]) for k in before if _bn(k)), "a frozen batch norm changed"
    changed = {k for k in before if not np.array_equal(after[k], before[k])}
    assert changed and all(k.endswith(("kernel", "/weights")) for k in changed)
    # Without frozen_bn, the same step moves BN statistics (the test can tell).
    plain = backend.build(plans["3_5"], seed=2)
    backend.load(plain, before)
    backend.train_step(plain, image)
    assert not np.array_equal(backend.weights(plain)["stem/op0/moving_mean"], before["stem/op0/moving_mean"])


@pytest.mark.parametrize("freeze_at", [1, 4])
def test_freeze_at_freezes_exactly_the_first_nodes(backend: Backend, plans: dict[str, specgraph.Plan],
                                                   image: np.ndarray, freeze_at: int) -> None:
    plan = plans["3_5"]
    frozen = set(FIRST_NODES[:freeze_at])
    assert [n.name for n in plan.nodes[:freeze_at]] == FIRST_NODES[:freeze_at]
    model = backend.build(plan, seed=3, freeze_at=freeze_at)
    backend.randomize(model, seed=3)
    before = backend.weights(model)
    variables = {k for k in before if not k.endswith(("moving_mean", "moving_variance"))}
    assert backend.trainable(model) == {k for k in variables if _node(k) not in frozen}
    backend.train_step(model, image)
    after = backend.weights(model)
    for name in before:
        same = np.array_equal(after[name], before[name])
        if _node(name) in frozen:
            assert same, f"{name} is frozen but changed"  # BN statistics too: frozen nodes' BNs use them
    moved = {_node(k) for k in before if not np.array_equal(after[k], before[k])}
    assert moved == {n.name for n in plan.nodes} - frozen  # everything else trains


@pytest.mark.parametrize(("options", "name"), [
    ({"frozen_bn": "yes"}, "frozen_bn"),
    ({"frozen_bn": 1}, "frozen_bn"),
    ({"freeze_at": -1}, "freeze_at"),
    ({"freeze_at": 1.5}, "freeze_at"),
    ({"freeze_at": True}, "freeze_at"),
    ({"freeze_at": 19}, "freeze_at"),  # the [3, 5] plan has 18 nodes
])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_bad_freeze_options(backend_name: str, plans: dict[str, specgraph.Plan], options: dict[str, Any],
                            name: str) -> None:
    Backend(backend_name)  # skips when the backend is not installed
    with pytest.raises(specgraph.ArgumentError, match=rf"^{name}: ") as caught:
        specgraph.compile(plans["3_5"], backend=backend_name, **options)
    assert caught.value.problems[0].path == name
    with pytest.raises(specgraph.ArgumentError, match=rf"^{name}: "):
        Backend(backend_name).plugin.compile(plans["3_5"], **options)


def test_freeze_at_may_freeze_every_node(plans: dict[str, specgraph.Plan]) -> None:
    model = Backend("torch").build(plans["3_5"], freeze_at=len(plans["3_5"].nodes))
    assert not any(p.requires_grad for p in model.parameters())


# --- feature_info ------------------------------------------------------------------------------


def test_feature_info(backend: Backend, models: dict[str, Any], image: np.ndarray) -> None:
    full, sel = models["full"].feature_info, models["3_5"].feature_info
    # SpineNet-49S: endpoints_num_filters 128 at every level, stride 2**level.
    assert full.channels() == [128] * 5 and full.reduction() == [8, 16, 32, 64, 128]
    assert full.levels() == [3, 4, 5, 6, 7] and full.keys() == ["3", "4", "5", "6", "7"]
    assert sel.channels() == [128, 128] and sel.reduction() == [8, 32] and sel.levels() == [3, 5]
    assert sel.reduction(1) == 32 and sel.channels([1, 0]) == [128, 128] and sel.reduction(-1) == 32
    # Still the list of Feature(level, channels, stride, node) it was.
    assert [(f.level, f.channels, f.stride, f.node) for f in sel] == [("3", 128, 8, "endpoint_3"),
                                                                      ("5", 128, 32, "endpoint_5")]
    assert len(sel) == 2 and sel[0].level == "3" and sel[-1].node == "endpoint_5"
    names = {"torch": ["nodes.endpoint_3", "nodes.endpoint_5"], "tensorflow": ["endpoint_3_op0", "endpoint_5_op0"]}
    assert sel.module_name() == names[backend.name] and sel.module_name(0) == names[backend.name][0]
    assert sel.get_dicts(1) == {"num_chs": 128, "reduction": 32, "module": names[backend.name][1], "level": 5}
    # Each module name is a module of the model, and the output has what feature_info says.
    out = backend.run(models["3_5"], image)
    for f, module in zip(sel, sel.module_name(), strict=True):
        if backend.name == "torch":
            assert module in dict(models["3_5"].named_modules())
        else:
            assert models["3_5"].get_layer(module) is not None
        assert out[f.level].shape[1] == f.channels and SIZE // out[f.level].shape[2] == f.stride
    with pytest.raises(specgraph.ArgumentError, match="idx"):
        sel.channels(2)
    with pytest.raises(specgraph.ArgumentError, match="idx"):
        sel.reduction("3")


def test_torch_contracts_follow_the_selection(plans: dict[str, specgraph.Plan]) -> None:
    backend = Backend("torch")
    detection = pytest.importorskip("specgraph_torch.detection")
    sel = backend.build(plans["3_5"])
    assert sel.size_divisibility == 32  # 2**max_level of the selection
    assert {k: (s.channels, s.stride) for k, s in sel.output_shape().items()} == {"3": (128, 8), "5": (128, 32)}
    wrapped = detection.TorchvisionBackbone(sel)
    anchors = detection.anchor_generator(wrapped)
    assert [round(s[0]) for s in anchors.sizes] == [32, 128]  # 4 * stride per level
    with backend.torch.no_grad():
        out = wrapped.eval()(backend.torch.zeros(1, 3, 64, 64))
    assert list(out) == ["3", "5"]


def test_keras_config_keeps_levels_and_freezing(plans: dict[str, specgraph.Plan]) -> None:
    backend = Backend("tensorflow")
    model = backend.plugin.compile(plans["3_5"], frozen_bn=True, freeze_at=2)
    config = model.get_config()
    assert config["levels"] == [3, 5] and config["frozen_bn"] is True and config["freeze_at"] == 2
    again = type(model).from_config(config)
    assert again.plan.hash == plans["3_5"].hash and list(again.output_specs) == ["3", "5"]
    assert backend.trainable(again) == backend.trainable(model)

