"""Spec section 1: a saved state dict loads back bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from dcp_impl.dtypes import by_torch
from spec_tests import strategies as sts
from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import may_refuse
from spec_tests.properties.checks import (
    BOUNDARIES_MIB,
    LARGE_BYTES,
    MIB,
    Location,
    assert_nothing_committed,
    check_load,
    claimed,
    draw_tensor,
    pattern,
    roundtrip,
)
from spec_tests.properties.large import large_dtype, large_pattern
from spec_tests.sim import harness

__all__ = ["RoundTripProperties"]

#: Entries of the many-entries property: past 1,024 (a power-of-two table's size) and past
#: 1,000 (one un-paginated object-store listing), on one rank.
MANY_ENTRIES = 1_100
_MANY_SEED = 2113

#: Shapes with no elements or no dimensions, each tried in every example.
_ZERO_SHAPES = sts.NamedCases(
    {"0-dim": (), "empty": (0,), "zero columns": (3, 0), "zero rows": (0, 4), "3-D": (2, 0, 3)}
)

#: Names that are awkward for some store, tried in every run (test_odd_names draws more).
_ODD_NAMES = sts.NamedCases(
    {
        "leading and trailing spaces": " padded ",
        "dots": "model.layers.0.weight",
        "colon": "opt:state",
        "dash": "-",
        "CJK": "日本語",
        "emoji": "🙂",
        "sharp s": "ß",
        "omega": "Ω",
        "percent escape": "a%2Fb",
        "long": "n" * 200,
    }
)

# Non-tensor entries from 1 KiB to 4 MiB, one byte either side of each power of four: a
# backend's buffer for small objects must not cut a large one short.
_OBJECT_SIZES = tuple(sorted({(1 << k) + d for k in range(10, 23, 2) for d in (-1, 0, 1)}))


class RoundTripProperties:
    """Single-rank saves of every claimed dtype and awkward shape, compared bit for bit."""

    @given(data=st.data())
    def test_every_claimed_dtype(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Any claimed dtype (NaN payloads, -0.0, extremes, random bits) round-trips exactly."""
        value = draw_tensor(data, dcp_backend, max_dims=2)
        with harness.repro(dcp_backend, dtype=value.dtype, shape=tuple(value.shape)):
            roundtrip(dcp_backend, dcp_location(), {"t": value})

    @given(data=st.data())
    def test_zero_dim_and_zero_size(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """0-dim tensors and tensors with a zero-size dimension keep their shape.

        Every named shape in every example (one checkpoint each), the dtype drawn for each.
        """
        for label, shape in _ZERO_SHAPES:
            value = draw_tensor(data, dcp_backend, shape=shape)
            with harness.repro(dcp_backend, dtype=value.dtype, shape=shape, case=label):
                roundtrip(dcp_backend, dcp_location(), {"t": value})

    @pytest.mark.parametrize("case", ["nothing", "only objects", "only empty tensors"])
    def test_checkpoints_without_tensor_bytes(
        self, dcp_backend: Backend, dcp_location: Location, case: str
    ) -> None:
        """A checkpoint of nothing, of non-tensor entries only, or of empty tensors only (an
        optimizer before its first step, a model not yet materialized): the save raises, or
        the load returns exactly what was saved (committed means loadable)."""
        empty = pattern(claimed(dcp_backend)[0], (0, 4))
        states: dict[str, dict[str, object]] = {
            "nothing": {},
            "only objects": {"param_groups": [{"lr": 0.1, "params": [0, 1]}], "step": 0},
            "only empty tensors": {"w": empty, "b": empty[:, :0]},
        }
        state = states[case]
        if case == "only objects" and not claims(dcp_backend, "bytes"):
            pytest.skip(f"backend {dcp_backend.name!r} does not claim bytes")
        location = dcp_location()
        with harness.repro(dcp_backend, case=case):
            with may_refuse(f"saving a checkpoint of {case}") as saving:
                harness.save(dcp_backend, location, [state])
            if not saving.refused:
                check_load(dcp_backend, location, state)

    @given(data=st.data())
    def test_noncontiguous_tensors(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Views of every kind (offsets, strides, permutes, conj/neg bits) save their values."""
        value = draw_tensor(data, dcp_backend, max_dims=5)
        view = data.draw(sts.noncontiguous(value), label="view")
        note(f"strides={view.stride()}")
        with harness.repro(
            dcp_backend, dtype=view.dtype, shape=tuple(view.shape), stride=view.stride()
        ):
            roundtrip(dcp_backend, dcp_location(), {"t": view})

    @pytest.mark.parametrize("transposed", [False, True], ids=["contiguous", "transposed"])
    def test_large_tensors(
        self, dcp_backend: Backend, dcp_location: Location, transposed: bool
    ) -> None:
        """Tensors of 64 MiB (contiguous and transposed) round-trip exactly.

        Fixed cases, not draws (:mod:`.large`): a failure reports at once, holding one case.
        """
        dtype = large_dtype(dcp_backend, int(transposed), 2)
        cols = 1024
        rows = math.ceil(LARGE_BYTES / (cols * by_torch(dtype).itemsize))
        value = large_pattern(rows * cols * by_torch(dtype).itemsize, dtype, seed=rows)
        value = value.reshape(rows, cols)
        if transposed:
            value = value.t()
        with harness.repro(dcp_backend, dtype=dtype, shape=tuple(value.shape)):
            roundtrip(dcp_backend, dcp_location(), {"big": value})

    @pytest.mark.parametrize("kind", sts.VIEW_KINDS)
    def test_every_view_kind(self, dcp_backend: Backend, dcp_location: Location, kind: str) -> None:
        """Each kind of view, in every claimed dtype it applies to, saves its values.

        Named, so every run tries each: storage offsets (0-d and empty tensors too), strided
        slices, transposes and permutes, inner-dimension cuts, channels_last, stride-0
        broadcasts, conjugated and negated views (``x.conj()``, ``torch._neg_view``: the bit
        is part of the values; the storage alone does not hold them).
        """
        shape = sts.VIEWS[kind].example_shape
        state = {}
        for dtype in claimed(dcp_backend):
            base = pattern(dtype, shape)
            if kind in sts.kinds_for(base):
                state[f"{kind} {str(dtype).removeprefix('torch.')}"] = sts.make_view(kind, base)
        if not state:
            pytest.skip(f"no dtype {dcp_backend.name!r} claims has {kind!r} views")
        location = dcp_location()
        with harness.repro(dcp_backend, view=kind, entries=sorted(state)):
            roundtrip(dcp_backend, location, state)
            check_load(dcp_backend, location, state, strided=True)

    @pytest.mark.parametrize("sharing", sorted(sts.SHARING))
    def test_entries_sharing_storage(
        self, dcp_backend: Backend, dcp_location: Location, sharing: str
    ) -> None:
        """Entries sharing one storage (tied weights, fused q/k/v slices, overlapping windows)
        each load back as their own values, in every claimed dtype."""
        state = {}
        for dtype in claimed(dcp_backend):
            group = sts.shared_entries(sharing, pattern(dtype, (4, 6)))
            name = str(dtype).removeprefix("torch.")
            state.update({f"{name}.{key}": value for key, value in group.items()})
        with harness.repro(dcp_backend, sharing=sharing, entries=sorted(state)):
            roundtrip(dcp_backend, dcp_location(), state)

    def test_many_entries_on_one_rank(self, dcp_backend: Backend, dcp_location: Location) -> None:
        """1,100 small entries on one rank: every claimed dtype, every view kind, tied and
        fused weights, non-tensor entries interleaved (where ``bytes`` is claimed), names with
        numbers of every digit count, inserted in no sorted order. Deterministic."""
        state = sts.bulk_entries(
            MANY_ENTRIES,
            dtypes=claimed(dcp_backend),
            seed=_MANY_SEED,
            allow_bytes=claims(dcp_backend, "bytes"),
        )
        with harness.repro(dcp_backend, entries=len(state), seed=_MANY_SEED):
            roundtrip(dcp_backend, dcp_location(), state)

    @pytest.mark.parametrize("side", ["-1", "+1"])
    @pytest.mark.parametrize("mib", BOUNDARIES_MIB)
    def test_sizes_cross_buffer_boundaries(
        self, dcp_backend: Backend, dcp_location: Location, mib: int, side: str
    ) -> None:
        """A tensor one element short of, or past, 1/4/8/16/32 MiB round-trips exactly.

        Fixed cases (:mod:`.large`), each with its own claimed dtype: between them they meet
        element sizes from one byte to the widest.
        """
        case = 2 * BOUNDARIES_MIB.index(mib) + (side == "+1")
        dtype = large_dtype(dcp_backend, case, 2 * len(BOUNDARIES_MIB))
        itemsize = by_torch(dtype).itemsize
        numel = mib * MIB // itemsize + int(side)
        value = large_pattern(numel * itemsize, dtype, seed=mib)
        with harness.repro(dcp_backend, dtype=dtype, numel=numel):
            roundtrip(dcp_backend, dcp_location(), {"edge": value})

    @given(data=st.data())
    def test_odd_names(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Entry names with dots, unicode, spaces and slashes round-trip."""
        keys = data.draw(st.lists(sts.names(), min_size=1, max_size=4, unique=True), label="names")
        state = {key: draw_tensor(data, dcp_backend, max_dims=2) for key in keys}
        with harness.repro(dcp_backend, names=keys):
            roundtrip(dcp_backend, dcp_location(), state)

    def test_names_differing_only_in_spelling(
        self, dcp_backend: Backend, dcp_location: Location
    ) -> None:
        """Names equal under case folding, Unicode normalisation or separator mapping stay apart.

        Stores that fold case (macOS, Windows), normalise Unicode (HFS+) or map ``.``/``/``
        to path separators merge such names into one object; each holds its own values here.
        The odd names the suite names (:data:`_ODD_NAMES`) are saved beside them in every run.
        """
        names = ["w", "W", "a.b", "a/b", "a_b", "a b", "a\\b", "\u00e9", "e\u0301", "ǅ", "ǆ"]
        names += _ODD_NAMES.values()
        dtypes = claimed(dcp_backend)
        dtype = next((d for d in dtypes if d is not torch.bool), dtypes[0])
        if dtype is torch.bool:  # row k holds the bits of k: no two rows alike
            rows = (torch.arange(len(names))[:, None] >> torch.arange(16)) & 1
        else:  # 16 bytes a row, whole elements of any dtype
            rows = torch.arange(16 * len(names)).reshape(len(names), 16) % 251
        state = {n: rows[k].to(torch.uint8).view(dtype) for k, n in enumerate(names)}
        with harness.repro(dcp_backend, names=names):
            roundtrip(dcp_backend, dcp_location(), state)

    @pytest.mark.parametrize("name", sorted(sts.RESERVED_NAMES))
    def test_reserved_names(self, dcp_backend: Backend, dcp_location: Location, name: str) -> None:
        """A name some format reserves round-trips, or the save refuses it and commits nothing.

        Refusing is allowed (safetensors cannot hold a tensor called ``__metadata__``);
        writing a checkpoint that then fails to load, or loads wrong, is not.
        """
        dtype = claimed(dcp_backend)[0]
        raw = torch.arange(32, dtype=torch.uint8)  # 16 bytes each: whole elements of any dtype
        if dtype is torch.bool:
            raw %= 2  # the only valid bool bytes
        state = {name: raw[:16].view(dtype), "plain": raw[16:].view(dtype)}
        location = dcp_location()
        with harness.repro(dcp_backend, names=[name]):
            with may_refuse(f"saving an entry named {name!r}") as outcome:
                harness.save(dcp_backend, location, [state])
            if outcome.refused:  # a refused save must leave nothing
                assert_nothing_committed(dcp_backend, location, state, f"the save refused {name!r}")
                return
            check_load(dcp_backend, location, state)

    @given(data=st.data())
    def test_nested_state_dicts(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Nested dicts of tensors (maybe non-contiguous) load back under flattened names."""
        state = data.draw(
            sts.state_dicts(allowed=claimed(dcp_backend), allow_bytes=False, max_entries=256),
            label="state dict",
        )
        strided = data.draw(st.booleans(), label="strided destinations")
        with harness.repro(dcp_backend, state_keys=sorted(map(str, state))):
            roundtrip(dcp_backend, dcp_location(), state, strided=strided)

    @pytest.mark.dcp_requires("bytes")
    @given(data=st.data())
    def test_non_tensor_entries(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Ints, strings, lists and bytes (DCP's BytesIO entries, up to MiBs) round-trip."""
        state = data.draw(
            sts.state_dicts(allowed=claimed(dcp_backend), max_entries=256), label="state dict"
        )
        state["extra object"] = {"step": 3, "tag": "x"}
        size = data.draw(st.sampled_from(_OBJECT_SIZES), label="large object bytes")
        state["large object"] = ("0123456789abcdef" * (size // 16 + 1))[:size]
        with harness.repro(dcp_backend, state=state):
            roundtrip(dcp_backend, dcp_location(), state)

    @pytest.mark.dcp_requires("bytes")
    def test_non_tensor_sizes_cross_buffer_boundaries(
        self, dcp_backend: Backend, dcp_location: Location
    ) -> None:
        """Non-tensor entries one byte short of, at, and past each power of four from 1 KiB
        to 4 MiB, all in one checkpoint beside a tensor: every named size in every run."""
        raw = torch.arange(16, dtype=torch.uint8) % 2  # 16 valid bytes of any dtype, bool too
        state: dict[str, object] = {"t": raw.view(claimed(dcp_backend)[0])}
        for size in _OBJECT_SIZES:
            state[f"object of {size} bytes"] = ("0123456789abcdef" * (size // 16 + 1))[:size]
        with harness.repro(dcp_backend, sizes=_OBJECT_SIZES):
            roundtrip(dcp_backend, dcp_location(), state)

    @pytest.mark.dcp_requires("bytes")
    @pytest.mark.parametrize("name", sorted(sts.USER_OBJECTS))
    def test_user_objects_load_exactly_or_raise(
        self, dcp_backend: Backend, dcp_location: Location, name: str
    ) -> None:
        """A legitimate object that is not ``weights_only``-safe (a user's dataclass, an
        ``argparse.Namespace``, a ``datetime``, an enum, a ``Fraction``) loads back exactly or
        the load raises: never as a stand-in (``None``, a dict of its fields).

        Under ``safe-load`` the plain reader may refuse it; the backend's ``trusting_reader``
        (optional member) must load it exactly. Without ``safe-load`` the plain reader must.
        """
        value = sts.USER_OBJECTS[name]()
        tensor = pattern(claimed(dcp_backend)[0], (2, 3))
        state = {"t": tensor, "object": value}
        location = dcp_location()
        with harness.repro(dcp_backend, object=value):
            harness.save(dcp_backend, location, [state])
            if claims(dcp_backend, "safe-load"):
                with may_refuse(f"loading a {name} without trusting the checkpoint"):
                    check_load(dcp_backend, location, state)
            else:
                check_load(dcp_backend, location, state)
            trusting = getattr(dcp_backend, "trusting_reader", None)
            if callable(trusting):
                check_load(dcp_backend, location, state, readers=[trusting(location)])

    def test_all_claimed_dtypes_in_one_checkpoint(
        self, dcp_backend: Backend, dcp_location: Location
    ) -> None:
        """Every claimed dtype, contiguous and transposed, side by side in a single checkpoint,
        loaded into plain and into strided destinations.

        Deterministic, so each dtype meets the non-contiguous paths in every run (a random
        draw pairs a given dtype with a given view only now and then), at 256 KiB each: past
        the size where torch's copies leave their byte-copy fast path for per-dtype kernels.
        Each dtype's special bit patterns (-0.0, inf, NaN payloads, extremes) are saved too:
        named values, tried in every run rather than when a draw picks them.
        """
        state = {}
        for dtype in claimed(dcp_backend):
            raw = torch.arange(256 * 1024) * 37 % (2 if dtype is torch.bool else 256)
            value = raw.to(torch.uint8).reshape(256, 1024).view(dtype)
            name = str(dtype).removeprefix("torch.")
            state[name] = value
            state[f"{name} transposed"] = value.t()
            state[f"{name} special values"] = sts.special_values(dtype)
        location = dcp_location()
        with harness.repro(dcp_backend, dtypes=sorted(state)):
            roundtrip(dcp_backend, location, state)
            check_load(dcp_backend, location, state, strided=True)
