"""Reading the licensed SMPL file safely, checking it, and importing it into the weights store.

SMPL files come as Python 2 pickles whose arrays are chumpy objects and scipy
sparse matrices (the official ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``
and HMR's ``neutral_smpl_with_cocoplus_reg.pkl``), as plain pickles of numpy
arrays, or as ``.npz``. They are read without chumpy and without running any
code from the file: the unpickler below resolves only an explicit list of
globals, each to an inert stand-in that records data, and turns those into
numpy arrays after the pickle has been read. ``import_smpl`` checks names and
shapes and stores one clean ``.npz`` that ``meshcli.smpl.SMPLModel`` builds smplx from.
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ..errors import MeshcliError, first_line
from ..types import file_sha256
from .sinks import write_atomic

LICENCE_URL = "https://smpl.is.tue.mpg.de/"
HMR_MODELS_URL = "https://people.eecs.berkeley.edu/~kanazawa/cachedir/hmr/models.tar.gz"
SMPL_FILE = "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
HMR_SMPL_FILE = "neutral_smpl_with_cocoplus_reg.pkl"
IMPORT_COMMAND = "meshcli weights import smpl FILE"

NUM_VERTS, NUM_FACES, NUM_JOINTS, NUM_COCOPLUS = 6890, 13776, 24, 19

# Required arrays in SMPL's own layout; None is the number of shape components (>= 10).
LAYOUT: dict[str, tuple[int | None, ...]] = {
    "v_template": (NUM_VERTS, 3),
    "shapedirs": (NUM_VERTS, 3, None),
    "posedirs": (NUM_VERTS, 3, 9 * (NUM_JOINTS - 1)),
    "J_regressor": (NUM_JOINTS, NUM_VERTS),
    "weights": (NUM_VERTS, NUM_JOINTS),
    "kintree_table": (2, NUM_JOINTS),
    "f": (NUM_FACES, 3),
}
# HMR's file adds the regressor of its 19 cocoplus joints (14 LSP joints + 5 face points).
OPTIONAL_LAYOUT: dict[str, tuple[int, ...]] = {"cocoplus_regressor": (NUM_COCOPLUS, NUM_VERTS)}

_WHERE = (f"get {SMPL_FILE} from {LICENCE_URL} (free registration; SMPL Model License, non-commercial) or "
          f"{HMR_SMPL_FILE} from HMR's {HMR_MODELS_URL}, "
          f"then run `{IMPORT_COMMAND}`; `meshcli weights fetch hmr` also stores HMR's copy")


# --------------------------------------------------------------------------
# The safe unpickler


class _Forbidden(pickle.UnpicklingError):
    """The pickle asked for something outside the whitelist."""


class _Marker:
    """A global that may only appear as an argument (numpy.ndarray, object); not callable."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Allowed:
    """A whitelisted callable. Slots and a refusing __setstate__ keep BUILD from altering it."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def __setstate__(self, state):
        raise _Forbidden("state applied to a function")


class _StandIn:
    """Base of the inert objects built in place of numpy/scipy/chumpy objects."""

    def value(self):
        raise NotImplementedError


class _DType(_StandIn):
    dtype: np.dtype | None = None

    def __setstate__(self, state):
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]);
        # only plain numeric dtypes (no fields, no subarray) are accepted.
        if (not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4)
                or state[2:5] != (None, None, None) or (len(state) == 9 and state[8])):
            raise _Forbidden("a structured or unusual numpy dtype")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])
        elif state[1] not in ("|", "="):
            raise _Forbidden(f"numpy byte order {state[1]!r}")


class _Array(_StandIn):
    array: np.ndarray | None = None

    def __setstate__(self, state):
        # numpy's ndarray state: ([version,] shape, dtype, is_fortran, raw bytes).
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Forbidden("an array state of unknown layout")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")

    def value(self):
        if self.array is None:
            raise _Forbidden("an array without data")
        return self.array


class _ChumpyArray(_StandIn):
    """chumpy.ch.Ch: a leaf holds its value in ``x``; nothing else of chumpy is needed."""

    x = None

    def __setstate__(self, state):
        if not isinstance(state, dict) or "x" not in state:
            raise _Forbidden("a chumpy object without an array value")
        self.x = state["x"]

    def value(self):
        return np.asarray(_resolve(self.x), dtype=np.float64)


class _SparseMatrix(_StandIn):
    """A scipy.sparse matrix, rebuilt as a dense numpy array from its data arrays."""

    compressed_by_columns: bool | None = None  # True csc, False csr, None coo
    state: dict | None = None

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise _Forbidden("a sparse matrix state that is not a dict")
        self.state = state

    def value(self):
        s = self.state or {}
        shape = s.get("_shape", s.get("shape"))
        if (not isinstance(shape, tuple) or len(shape) != 2
                or not all(isinstance(n, int) and 0 <= n for n in shape)):
            raise _Forbidden("a sparse matrix without a valid shape")
        if shape[0] * shape[1] > 50_000_000:
            raise _Forbidden(f"a sparse matrix of shape {shape}, too large for an SMPL file")
        data = np.asarray(_resolve(s.get("data")))
        if data.dtype.kind not in "biuf" or data.ndim != 1:
            raise _Forbidden("sparse matrix data that is not a numeric vector")
        dense = np.zeros(shape, dtype=np.float64)
        if self.compressed_by_columns is None:
            rows, cols = (_index_vector(s.get(k), len(data), n) for k, n in (("row", shape[0]), ("col", shape[1])))
        else:
            n_major, n_minor = (shape[1], shape[0]) if self.compressed_by_columns else shape
            minor = _index_vector(s.get("indices"), len(data), n_minor)
            indptr = _index_vector(s.get("indptr"), n_major + 1, len(data) + 1)
            if indptr[0] != 0 or indptr[-1] != len(data) or np.any(np.diff(indptr) < 0):
                raise _Forbidden("a sparse matrix with an inconsistent indptr")
            major = np.repeat(np.arange(n_major), np.diff(indptr))
            rows, cols = (minor, major) if self.compressed_by_columns else (major, minor)
        np.add.at(dense, (rows, cols), data)
        return dense


class _CscMatrix(_SparseMatrix):
    compressed_by_columns = True


class _CsrMatrix(_SparseMatrix):
    compressed_by_columns = False


class _CooMatrix(_SparseMatrix):
    compressed_by_columns = None


_NDARRAY, _OBJECT = _Marker("numpy.ndarray"), _Marker("object")
_STAND_IN_CLASSES = (_ChumpyArray, _CscMatrix, _CsrMatrix, _CooMatrix)
_NUMERIC_DTYPE = re.compile(r"(b1|[iu][1248]|f[248]|c(8|16))")


def _index_vector(obj, length: int, bound: int) -> np.ndarray:
    a = np.asarray(_resolve(obj))
    if a.dtype.kind not in "iu" or a.shape != (length,) or (length and (a.min() < 0 or a.max() >= bound)):
        raise _Forbidden("a sparse matrix with out-of-range or mis-sized index arrays")
    return a.astype(np.int64)


def _array_from_bytes(raw, dtype, shape, order: str) -> np.ndarray:
    if isinstance(raw, str):  # Python 2 str, decoded as latin1 by the unpickler
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)) or not isinstance(dtype, _DType) or dtype.dtype is None:
        raise _Forbidden("an array whose data are not raw bytes of a numeric dtype")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise _Forbidden("an array with an invalid shape")
    if int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize != len(raw):
        raise _Forbidden("an array whose data size does not match its shape")
    flat = np.frombuffer(raw, dtype=dtype.dtype)
    return flat.reshape(shape, order=order).astype(dtype.dtype.newbyteorder("="), order="C")


def _make_dtype(spec, align=False, copy=True) -> _DType:
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or not _NUMERIC_DTYPE.fullmatch(spec):
        raise _Forbidden(f"numpy dtype {spec!r} (only numeric dtypes are read)")
    d = _DType()
    d.dtype = np.dtype(spec)
    return d


def _reconstruct(subtype, shape, typecode) -> _Array:
    # numpy's ndarray.__reduce__ starts from an empty array; the data come with BUILD.
    if subtype is not _NDARRAY:
        raise _Forbidden("array reconstruction of a class other than numpy.ndarray")
    return _Array()


def _frombuffer(buf, dtype, shape, order) -> _Array:
    # protocol 5 numpy pickles carry the data in-band as (buffer, dtype, shape, order)
    a = _Array()
    a.array = _array_from_bytes(buf, dtype, shape, "F" if order == "F" else "C")
    return a


def _scalar(dtype, data=None):
    if data is None:
        raise _Forbidden("a numpy scalar without data")
    return _array_from_bytes(data, dtype, (), "C")[()]


def _latin1_bytes(text, encoding="latin1") -> bytes:
    # Python 3 writes bytes into protocol <= 2 pickles as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Forbidden("_codecs.encode with anything but a latin1 string")
    return text.encode("latin1")


def _reconstructor(cls, base, state) -> _StandIn:
    # copy_reg._reconstructor(cls, object, None): protocol 0/1 way of object.__new__(cls)
    if cls not in _STAND_IN_CLASSES or base is not _OBJECT or state is not None:
        raise _Forbidden("copy_reg._reconstructor of anything but a whitelisted class")
    return cls.__new__(cls)


def _whitelist() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Allowed(_make_dtype),
        ("_codecs", "encode"): _Allowed(_latin1_bytes),
        ("chumpy.ch", "Ch"): _ChumpyArray,
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1 / numpy 2 module names
        allowed[(f"{core}.multiarray", "_reconstruct")] = _Allowed(_reconstruct)
        allowed[(f"{core}.multiarray", "scalar")] = _Allowed(_scalar)
        allowed[(f"{core}.numeric", "_frombuffer")] = _Allowed(_frombuffer)
    for builtins in ("__builtin__", "builtins"):  # Python 2 / 3 names
        allowed[(builtins, "object")] = _OBJECT
        allowed[(builtins, "set")] = _Allowed(set)  # chumpy keeps a set of names in its state
        allowed[(builtins, "frozenset")] = _Allowed(frozenset)
    for reg in ("copy_reg", "copyreg"):
        allowed[(reg, "_reconstructor")] = _Allowed(_reconstructor)
    for fmt, cls in (("csc", _CscMatrix), ("csr", _CsrMatrix), ("coo", _CooMatrix)):
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):  # old / new scipy
            allowed[(module, f"{fmt}_matrix")] = cls
    return allowed


_ALLOWED = _whitelist()


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the whitelist; anything else stops the load before it is called."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Forbidden(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _Forbidden("a persistent reference")


def _expanded_size(obj, seen: dict[int, int]) -> int:
    """How many objects ``obj`` becomes once shared references are copied out (lists and dicts are walked
    once each; a cycle counts once)."""
    if id(obj) in seen:
        return seen[id(obj)]
    seen[id(obj)] = 1
    if isinstance(obj, dict):
        children = obj.values()
    elif isinstance(obj, (list, tuple)):
        children = obj
    elif isinstance(obj, _StandIn):
        children = vars(obj).values()
    else:
        return 1
    seen[id(obj)] = size = 1 + sum(_expanded_size(child, seen) for child in children)
    return size


def _resolve(obj):
    if isinstance(obj, _StandIn):
        return obj.value()
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


# --------------------------------------------------------------------------
# Reading, checking and importing


def read_smpl_file(path: str | Path) -> dict[str, np.ndarray]:
    """Every numeric array in an SMPL ``.pkl`` or ``.npz`` by name (sparse ones made dense).

    Chumpy objects become their value, scipy sparse matrices dense float64
    arrays; strings and other non-array entries are dropped. Nothing in the
    file is executed: a pickle that names any other global is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshcliError(path, "SMPL model file not found", _WHERE)
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip:
        raw = _read_npz(path)
    else:
        raw = _read_pickle(path)
    return {k: v for k, v in raw.items()
            if isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise MeshcliError(path, f"not a readable .npz of plain arrays ({first_line(err)})",
                           "store numeric arrays only (no object arrays), or import the original SMPL .pkl") from None


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            loaded = _SafeUnpickler(fh, encoding="latin1").load()
        # Memo references let a few bytes name the same list over and over; copied out, 40 nested
        # pairs are 2^40 objects. Each object honestly pickled takes at least one byte of the file.
        size = _expanded_size(loaded, {})
        if size > path.stat().st_size:
            raise MeshcliError(path, f"refused to load: the pickle's {path.stat().st_size} bytes expand to "
                               f"{size} objects through shared references", "use the official SMPL file")
        data = _resolve(loaded)
    except _Forbidden as err:
        raise MeshcliError(path, f"refused to load: the pickle holds {err} (only numpy arrays, scipy sparse "
                                 "matrices and chumpy arrays are read)",
                           "use the official SMPL file; meshcli never runs code from model files") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, UnicodeError, RecursionError) as err:
        raise MeshcliError(path, f"not a readable SMPL pickle ({type(err).__name__}: {first_line(err)})",
                           "the file may be truncated or of another format; download it again") from None
    if not isinstance(data, dict):
        raise MeshcliError(path, f"not an SMPL model: the pickle holds a {type(data).__name__}, not a dict of arrays",
                           _WHERE)
    return data


def check_smpl(arrays: Mapping[str, np.ndarray], path: str | Path) -> dict[str, np.ndarray]:
    """SMPL's arrays checked and normalised: float64, int64 faces, root parent -1.

    Keeps exactly the LAYOUT arrays plus ``cocoplus_regressor`` when present;
    raises MeshcliError naming the first missing or mis-shaped array.
    """
    wanted = dict(LAYOUT)
    wanted.update({k: v for k, v in OPTIONAL_LAYOUT.items() if k in arrays})
    missing = [k for k in LAYOUT if k not in arrays]
    if missing:
        raise MeshcliError(path, f"not an SMPL model: missing {', '.join(repr(k) for k in missing)}", _WHERE)
    out = {}
    for name, expected in wanted.items():
        a = np.asarray(arrays[name])
        if a.ndim != len(expected) or any(e is not None and n != e for n, e in zip(a.shape, expected)):
            shown = tuple("K" if e is None else e for e in expected)
            raise MeshcliError(path, f"SMPL array {name!r} has shape {a.shape}, expected {shown}", _WHERE)
        out[name] = a
    if out["shapedirs"].shape[2] < 10:
        raise MeshcliError(path, f"SMPL 'shapedirs' has {out['shapedirs'].shape[2]} shape components, "
                                 "at least 10 are needed", _WHERE)
    for name, a in out.items():
        if name not in ("f", "kintree_table"):
            if not np.isfinite(a).all():
                raise MeshcliError(path, f"SMPL array {name!r} holds NaN or infinite values", _WHERE)
            out[name] = a.astype(np.float64)

    faces = out["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= NUM_VERTS:
        raise MeshcliError(path, "SMPL faces 'f' index vertices outside 0..6889", _WHERE)
    out["f"] = faces

    # The root's parent is stored as -1 or as uint32 4294967295; smplx expects every
    # parent to come before its child.
    kintree = out["kintree_table"].astype(np.int64)
    kintree[0, 0] = -1
    parents = kintree[0, 1:]
    if (not np.array_equal(kintree[1], np.arange(NUM_JOINTS))
            or np.any(parents < 0) or np.any(parents >= np.arange(1, NUM_JOINTS))):
        raise MeshcliError(path, "SMPL 'kintree_table' is not a 24-joint tree with parents before children", _WHERE)
    out["kintree_table"] = kintree
    return out


def load_smpl(path: str | Path) -> dict[str, np.ndarray]:
    """Read any accepted SMPL file and check it (``read_smpl_file`` + ``check_smpl``)."""
    return check_smpl(read_smpl_file(path), path)


def import_smpl(src: str | Path, dst_npz: str | Path) -> dict:
    """Check ``src`` and store its SMPL arrays as one clean ``.npz`` at ``dst_npz`` (atomically).

    Returns a summary for the weights manifest: source name, size and sha256,
    number of shape components and whether the cocoplus regressor is present.
    """
    src, dst_npz = Path(src), Path(dst_npz)
    arrays = load_smpl(src)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(Path(dst_npz), buffer.getvalue())
    return {
        "source": src.name,
        "source_size": src.stat().st_size,
        "source_sha256": file_sha256(src),
        "num_betas": int(arrays["shapedirs"].shape[2]),
        "cocoplus": "cocoplus_regressor" in arrays,
    }


def require_smpl(path: str | Path | None, stored: str | Path | None = None) -> Path:
    """The SMPL file a body command will use, checked to exist before any frame is read.

    ``path`` is the user's ``--smpl`` (a .pkl or .npz), ``stored`` the imported
    file in the weights store. A clear MeshcliError says which file to get,
    where its licence is and how to import it when neither exists.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MeshcliError(path, "SMPL model file not found (from --smpl)", _WHERE)
        return path
    if stored is not None and Path(stored).is_file():
        return Path(stored)
    raise MeshcliError(stored, "the SMPL body model is not set up (body methods need it; its licence "
                               "must be accepted on SMPL's site)", _WHERE)
