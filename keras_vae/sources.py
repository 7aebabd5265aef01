"""Where data comes from: file formats and locations behind `keras_vae.data.load`.

- `load_digits`: scikit-learn's embedded 8x8 digits (never downloads);
- `read_numpy`: `.npz` / `.npy` files;
- `read_image_folder`: a folder of PNG/JPEG/BMP/GIF images, optionally one
  subfolder per class;
- `read_idx` / `load_idx_data_set`: MNIST-style IDX files (gzipped or not),
  looked up in `data_dir`, `/usr/share/datasets/<name>/` (Debian's
  `dataset-fashion-mnist`), the Keras cache, and only then `keras.datasets`;
- `read_csv` / `csv_text`: CSV tables (header row, then one row per example)
  as text cells, strictly: what the cells mean is `keras_vae.tables`' concern.

Every reader turns a broken file into a ValueError naming the path and what
was wrong.
"""

import csv
import gzip
import io
import math
import os
import struct
import zipfile
import zlib

import keras
import numpy as np

__all__ = ["load_digits", "read_numpy", "read_image_folder", "read_idx", "load_idx_data_set",
           "read_csv", "csv_text", "MAX_CSV_BYTES"]

_SYSTEM_DATA_DIR = "/usr/share/datasets"
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_GRAY_MODES = ("1", "L", "LA")
_COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")
# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_digits():
    """scikit-learn's embedded digits: uint8 images (1797, 8, 8) in 0..16 and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("load('digits') needs scikit-learn: "
                          "pip install 'keras-vae[data]'") from e
    digits = load_digits()
    return digits.images.astype(np.uint8), digits.target  # (1797, 8, 8), values 0..16


# Largest array a .npz/.npy file may ask us to allocate, and pixels per image.
MAX_ARRAY_BYTES = 8 * 2 ** 30
MAX_IMAGE_PIXELS = 2 ** 24


def _gib(n):
    return f"{n / 2 ** 30:,.1f} GiB" if n >= 2 ** 30 else f"{n:,} bytes"


def _check_npy_header(f, stored_bytes, path, member=None):
    """Refuses an .npy stream whose header asks for more memory than its bytes or our limit.

    `f` is positioned at the start of the .npy data; `stored_bytes` is its full
    (uncompressed) length as the file or zip directory states it.
    """
    where = path if member is None else f"{path} (array {member!r})"
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(f)
    header = f.tell()
    needed = math.prod(int(d) for d in shape) * int(dtype.itemsize)
    if needed > MAX_ARRAY_BYTES:
        raise ValueError(
            f"{where} declares an array of shape {tuple(shape)} and dtype {dtype}, which "
            f"needs {_gib(needed)}; keras_vae reads arrays up to {_gib(MAX_ARRAY_BYTES)}. "
            f"Received: name_or_path={path!r}")
    if needed > stored_bytes - header:
        raise ValueError(
            f"{where} declares an array of shape {tuple(shape)} and dtype {dtype} "
            f"({_gib(needed)}) but holds only {_gib(max(0, stored_bytes - header))} of data: "
            f"the file is truncated or corrupt. Received: name_or_path={path!r}")


def _check_numpy_file(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as f:
                        _check_npy_header(f, info.file_size, path, info.filename[:-4])
    else:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                f.seek(0)
                _check_npy_header(f, os.path.getsize(path), path)


def read_numpy(path):
    """Reads a .npz/.npy file into a dict of arrays; wraps numpy's errors.

    The array headers are read first: an array that would need more than
    `MAX_ARRAY_BYTES` (8 GiB) or more bytes than the file holds is refused
    before anything is allocated.
    """
    try:
        _check_numpy_file(path)
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return {"x": loaded}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"Could not read {path} as a NumPy .npz/.npy array file "
                         f"({type(e).__name__}: {e}). Received: name_or_path={path!r}") from e


def read_image_folder(path):
    """Reads a folder of images -> uint8 (N, H, W[, 3]) and int labels or None."""
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("Reading an image folder needs Pillow: pip install "
                          "'keras-vae[data]'") from e

    def images_in(folder):
        names = [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
        return [f for f in names if f.lower().endswith(_IMAGE_EXTENSIONS) and os.path.isfile(f)]

    classes = sorted(d for d in os.listdir(path)
                     if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))
    files = [(f, None) for f in images_in(path)]
    if classes and files:
        raise ValueError(f"{path} mixes images ({files[0][0]}) with class subfolders "
                         f"{classes}; put every image in a class subfolder or use none. "
                         f"Received: name_or_path={path!r}")
    for label, c in enumerate(classes):
        files += [(f, label) for f in images_in(os.path.join(path, c))]
    if not files:
        raise ValueError(f"{path} holds no {'/'.join(_IMAGE_EXTENSIONS)} images (directly or "
                         f"in class subfolders). Received: name_or_path={path!r}")
    arrays, first = [], None
    for f, _ in files:
        try:
            with Image.open(f) as image:
                if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:
                    raise ValueError(
                        f"{image.size[0]}x{image.size[1]} is {image.size[0] * image.size[1]:,} "
                        f"pixels, more than the {MAX_IMAGE_PIXELS:,} keras_vae reads per "
                        f"image (a decompression bomb, or not a data set image)")
                if image.mode not in _GRAY_MODES + _COLOUR_MODES:
                    raise ValueError(f"unsupported image mode {image.mode!r}")
                mode = "L" if image.mode in _GRAY_MODES else "RGB"
                array = np.asarray(image.convert(mode))
                size = f"{image.size[0]}x{image.size[1]} {mode}"
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"Expected a readable PNG/JPEG/BMP/GIF image ({e}). "
                             f"Received: file={f!r}") from e
        if first is None:
            first = (f, size, array.shape)
        elif array.shape != first[2]:
            raise ValueError("All images must have the same size and mode. Received: "
                             f"{first[0]} is {first[1]} but {f} is {size}")
        arrays.append(array)
    labels = None if not classes else np.array([label for _, label in files], np.int64)
    return np.stack(arrays), labels


def read_idx(path):
    """Parses an IDX file (gzipped or not) into a numpy array of its stored shape."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"Could not read the IDX file ({e}). Received: path={path!r}") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"{path} is not an IDX file: magic number {raw[:4].hex() or 'missing'}, "
                         "expected 0000 then a type code (08, 09, 0b, 0c, 0d, 0e) and ndim >= 1")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: its header needs {header} bytes, "
                         f"the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected, found = math.prod(dims) * dtype.itemsize, len(raw) - header
    if found != expected:
        raise ValueError(f"{path} is truncated or corrupt: its header gives shape {dims} "
                         f"({expected} bytes of data) but it holds {found} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _find_idx_files(folder):
    """The four IDX paths in `folder` (x_train, y_train, x_test, y_test) or None."""
    paths = []
    for stem in _IDX_STEMS:
        dotted = stem.replace("-idx", ".idx")  # Some mirrors name them train-images.idx3-ubyte.
        names = [os.path.join(folder, n) for n in (stem + ".gz", stem, dotted + ".gz", dotted)]
        found = [n for n in names if os.path.isfile(n)]
        if not found:
            return None
        paths.append(found[0])
    return paths


def load_idx_data_set(name, data_dir, download):
    """Searches local IDX folders / mnist.npz, then keras.datasets if allowed."""
    sub = "fashion-mnist" if name == "fashion_mnist" else "mnist"
    keras_home = os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))
    keras_dir = os.path.join(keras_home, "datasets")
    roots = [] if data_dir is None else [os.fspath(data_dir)]
    places = [p for root in roots for p in (root, os.path.join(root, sub))]
    places += [os.path.join(_SYSTEM_DATA_DIR, sub), os.path.join(keras_dir, sub)]
    if name == "mnist":  # keras.datasets.mnist caches one npz.
        places += [os.path.join(root, "mnist.npz") for root in roots + [keras_dir]]
    for place in places:
        if place.endswith(".npz") and os.path.isfile(place):
            a = read_numpy(place)
            if not {"x_train", "y_train", "x_test", "y_test"} <= set(a):
                raise ValueError(f"{place} lacks x_train/y_train/x_test/y_test. "
                                 f"Received: keys={sorted(a)}")
            return (a["x_train"], a["y_train"]), (a["x_test"], a["y_test"])
        paths = os.path.isdir(place) and _find_idx_files(place)
        if paths:
            x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
            return (x_train, y_train), (x_test, y_test)
    looked = "\n".join(f"  - {p}" for p in places)
    message = (
        f"Could not find the {name} data set. Looked in (for {', '.join(_IDX_STEMS)}, each "
        f"optionally .gz{', or mnist.npz' if name == 'mnist' else ''}):\n{looked}\nTo get it: "
        + ("`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, installs to "
           "/usr/share/datasets/fashion-mnist/), or " if name == "fashion_mnist" else "")
        + "download the four IDX .gz files into a folder and pass data_dir=... (--data-dir on "
        f"the command line), or use download=True with internet access. "
        f"Received: name_or_path={name!r}, data_dir={data_dir!r}, download={download}")
    if not download:
        raise FileNotFoundError(message)
    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as e:  # Any download/extraction failure ends in the same advice.
        raise FileNotFoundError(f"{message}\nDownloading with keras.datasets.{name}.load_data() "
                                f"failed: {type(e).__name__}: {e}") from e


# Largest CSV file read (a table of that size is far beyond what an MLP VAE here trains on).
MAX_CSV_BYTES = 256 * 2 ** 20


def read_csv(path, max_bytes=None):
    """Reads a CSV table strictly: `(header, rows)`, every cell a stripped string.

    The first row is the header (column names: non-empty, distinct); every
    other row must have as many cells as the header (blank lines are
    skipped). Parsed with the standard library's `csv` module (RFC 4180
    quoting, `,` separator), UTF-8 (a byte-order mark is dropped).

    Args:
      path: a `.csv` file.
      max_bytes: largest file size read (default `MAX_CSV_BYTES`, 256 MiB).

    Returns:
      `(header, rows)`: a tuple of N column names and a list of rows, each a
      tuple of D strings (an empty string is an empty cell).

    Raises:
      ValueError: a file larger than `max_bytes`, not UTF-8 text, not CSV
        (e.g. an unterminated quote), no header, an empty or duplicate column
        name, a row with another number of cells (named by its line), or no
        data rows. The message names the path.
    """
    limit = MAX_CSV_BYTES if max_bytes is None else max_bytes
    where = f"Received: name_or_path={path!r}"
    size = os.path.getsize(path)
    if size > limit:
        raise ValueError(f"{path} has {_gib(size)}; keras_vae reads CSV tables up to "
                         f"{_gib(limit)}. {where}")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}). {where}") from None
    except OSError as e:
        raise ValueError(f"Could not read {path} ({e}). {where}") from e
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, rows = None, []
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields) and len(fields) == 1:
                continue  # a blank line
            fields = tuple(f.strip() for f in fields)
            if header is None:
                header = fields
                _check_header(header, path, where)
            elif len(fields) != len(header):
                raise ValueError(f"{path}, line {reader.line_num}: {len(fields)} cells, but the "
                                 f"header has {len(header)} columns (a ragged row). {where}")
            else:
                rows.append(fields)
    except csv.Error as e:
        raise ValueError(f"{path}, line {reader.line_num}: not valid CSV ({e}). {where}") from None
    if header is None:
        raise ValueError(f"{path} is empty: expected a header row of column names, then one "
                         f"row per example. {where}")
    if not rows:
        raise ValueError(f"{path} has a header but no data rows. {where}")
    return header, rows


def _check_header(header, path, where):
    for i, name in enumerate(header):
        if not name:
            raise ValueError(f"{path}, line 1 (the header): column {i + 1} has no name; "
                             f"expected a header row of column names. {where}")
        try:
            float(name)
        except ValueError:
            continue
        raise ValueError(f"{path}, line 1: expected a header row of column names, found the "
                         f"number {name!r} in column {i + 1} (is the header missing?). {where}")
    seen = set()
    for name in header:
        if name in seen:
            raise ValueError(f"{path}, line 1 (the header): the column name {name!r} appears "
                             f"twice; column names must be distinct. {where}")
        seen.add(name)


def csv_text(header, rows):
    """The CSV text (`\\n` line ends, minimal quoting) of a header and rows of strings."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
