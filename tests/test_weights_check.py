"""The core weights checker and .npz reader (numpy only; every backend loader relies on them)."""

from __future__ import annotations

import zipfile

import pytest

import specgraph
from specgraph._weights import Target, check_weights, convert_weights, read_npz

np = pytest.importorskip("numpy")

TARGETS = {"a/kernel": Target((3, 3, 2, 4), "float32", "a.weight"), "a/bias": Target((4,), "float32")}


def _good() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a/kernel": rng.normal(size=(3, 3, 2, 4)), "a/bias": np.arange(4)}


def _only(problems: list[specgraph.Problem]) -> specgraph.Problem:
    assert len(problems) == 1, problems
    assert isinstance(problems[0], specgraph.Problem) and problems[0].path and problems[0].message
    return problems[0]


def test_good_arrays_convert_to_the_target_dtype() -> None:
    out = convert_weights(_good(), TARGETS)
    assert {k: v.dtype for k, v in out.items()} == {"a/kernel": np.float32, "a/bias": np.float32}
    np.testing.assert_array_equal(out["a/bias"], [0, 1, 2, 3])
    assert check_weights(_good(), TARGETS) == []


def test_missing_and_unexpected_names() -> None:
    arrays = _good()
    del arrays["a/kernel"]
    arrays["b/kernel"] = np.zeros(2)
    problems = {p.path: p.message for p in check_weights(arrays, TARGETS)}
    assert set(problems) == {"a/kernel", "b/kernel"}
    assert "missing" in problems["a/kernel"] and "[3, 3, 2, 4]" in problems["a/kernel"]
    assert "a.weight" in problems["a/kernel"]  # the note says where it would go
    assert "unexpected" in problems["b/kernel"] and "[2]" in problems["b/kernel"]


def test_wrong_shape_names_both_shapes() -> None:
    arrays = {**_good(), "a/kernel": np.zeros((3, 3, 2, 5))}
    message = _only(check_weights(arrays, TARGETS)).message
    assert "[3, 3, 2, 5]" in message and "[3, 3, 2, 4]" in message


@pytest.mark.parametrize("dtype", [bool, np.complex64, object, "U3", "S3", [("x", "f4"), ("y", "f4")], "V4",
                                   "datetime64[s]"])
def test_refused_dtypes(dtype: object) -> None:
    arrays = {**_good(), "a/bias": np.zeros(4, dtype=dtype)}
    problem = _only(check_weights(arrays, TARGETS))
    assert problem.path == "a/bias" and "dtype" in problem.message and "float32" in problem.message


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int8, np.int64, np.uint16])
def test_accepted_dtypes(dtype: type) -> None:
    assert convert_weights({**_good(), "a/bias": np.ones(4, dtype)}, TARGETS)["a/bias"].dtype == np.float32


def test_ml_dtypes_floats_are_accepted() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    arrays = {**_good(), "a/bias": np.ones(4, ml_dtypes.bfloat16)}
    np.testing.assert_array_equal(convert_weights(arrays, TARGETS)["a/bias"], np.ones(4, np.float32))
    arrays["a/bias"][2] = np.nan
    assert "NaN" in _only(check_weights(arrays, TARGETS)).message


def test_non_finite_values_are_counted_and_located() -> None:
    kernel = np.ones((3, 3, 2, 4), np.float32)
    kernel[1, 2, 0, 3] = np.nan
    kernel[2, 0, 1, 1] = np.inf
    kernel[2, 2, 1, 3] = -np.inf
    message = _only(check_weights({**_good(), "a/kernel": kernel}, TARGETS)).message
    assert "3 non-finite" in message and "1 NaN" in message and "1 +inf" in message and "1 -inf" in message
    assert "[1, 2, 0, 3]" in message


def test_overflow_in_the_conversion_is_caught() -> None:
    targets = {"a/bias": Target((4,), "float16")}
    message = _only(check_weights({"a/bias": np.array([1.0, 2.0, 1e6, 3.0])}, targets)).message
    assert "too large for float16" in message and "[2]" in message


@pytest.mark.parametrize("value", [None, "weights", b"\x00", [[1.0, 2.0], [3.0]], [None, None, None, None]])
def test_values_that_are_not_arrays(value: object) -> None:
    problem = _only(check_weights({**_good(), "a/bias": value}, TARGETS))
    assert problem.path == "a/bias" and "not an array" in problem.message


def test_every_problem_at_once_in_one_error_with_caller_problems_first() -> None:
    arrays = _good()
    arrays["a/kernel"] = np.zeros((3, 3, 2, 4), bool)
    arrays["a/bias"] = np.array([np.nan] * 4)
    arrays["zzz"] = np.zeros(1)
    earlier = specgraph.Problem("found by the backend", "model/thing")
    with pytest.raises(specgraph.WeightsError) as info:
        convert_weights(arrays, TARGETS, file="w.npz", problems=[earlier])
    err = info.value
    assert isinstance(err, specgraph.BackendError)
    assert err.problems[0] == earlier
    assert {p.path for p in err.problems[1:]} == {"a/kernel", "a/bias", "zzz"}
    assert all(p.file == "w.npz" for p in err.problems[1:])
    assert "w.npz: zzz: unexpected" in str(err)


def test_a_shape_and_a_dtype_problem_are_both_listed() -> None:
    problems = check_weights({**_good(), "a/bias": np.zeros(5, complex)}, TARGETS)
    assert len(problems) == 2 and {p.path for p in problems} == {"a/bias"}


def test_read_npz_round_trip(tmp_path) -> None:
    np.savez(tmp_path / "w.npz", **_good())
    arrays = read_npz(tmp_path / "w.npz")
    assert set(arrays) == {"a/kernel", "a/bias"}
    np.testing.assert_array_equal(arrays["a/bias"], np.arange(4))


def _truncated(path):
    np.savez(path, **_good())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_a_zip(path):
    path.write_text("not weights")


def _npy_not_npz(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _bad_member(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/kernel.npy", b"\x93NUMPY garbage")


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("make", [None, "dir", _truncated, _not_a_zip, _npy_not_npz, _bad_member, _empty])
def test_read_npz_unreadable_files_raise_weights_error_naming_the_file(tmp_path, make) -> None:
    path = tmp_path / "w.npz"
    if make == "dir":
        path.mkdir()
    elif make is not None:
        make(path)
    with pytest.raises(specgraph.WeightsError) as info:
        read_npz(str(path))
    for problem in info.value.problems:
        assert isinstance(problem, specgraph.Problem)
        assert problem.file == str(path) and problem.message
    if make is None:
        assert "no such file" in str(info.value)


def test_read_npz_refuses_pickled_object_arrays(tmp_path) -> None:
    np.savez(tmp_path / "w.npz", good=np.zeros(2), bad=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(specgraph.WeightsError) as info:
        read_npz(tmp_path / "w.npz")
    problem = _only(list(info.value.problems))
    assert problem.path == "bad" and problem.file == str(tmp_path / "w.npz")
