"""Tables: named columns of three kinds, their inference, encoding and per-column statistics.

A `Table` is what `keras_vae.data.read_table` returns for a CSV file: the
column names, each column's kind and categories, and the values as a float32
array `x [N, D]` in the user's units with NaN for a missing entry. The file
format itself (strict CSV) is `keras_vae.sources.read_csv`; this module gives
the cells their meaning, and turns model outputs back into cells.

#### Column kinds and how they are inferred

On the observed (non-missing) cells of a column:

```none
declared categorical=(..)        -> "categorical"
every cell a number and
  declared numeric=(..)          -> "numeric"
  exactly two distinct values    -> "binary"   (values low < high)
  otherwise                      -> "numeric"
no cell a number (text)          -> "categorical"
numbers and text mixed           -> ValueError naming the first text cell
```

A missing cell is an empty cell or `NaN` (any case). Numbers are parsed
strictly (`[+-]digits[.digits][e[+-]digits]`; no `inf`, no `1_000`, no
thousands separators). A categorical column is stored as integer codes
`0..K-1`, its categories sorted (by value when every category is a number,
else as text); `decode` turns codes back into the same texts. A binary column
keeps its two values in `x` (user units); its likelihood is a Bernoulli on
`(x - low) / (high - low)`.
"""

import math
import re

import numpy as np

__all__ = ["Table", "KINDS", "MISSING_TEXTS", "MAX_CATEGORIES", "parse_number",
           "format_number"]

KINDS = ("numeric", "binary", "categorical")
MISSING_TEXTS = ("", "nan")  # compared lower-cased
# More distinct texts than this is an identifier or free text, not a category.
MAX_CATEGORIES = 256

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _missing(text):
    return text.lower() in MISSING_TEXTS


def parse_number(text):
    """`float(text)` for a strictly written finite number, else None."""
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def format_number(value):
    """The shortest text that reads back as the same float32 (`"1.5"`, `"-0.0031"`)."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-") \
        if abs(value) < 1e16 else np.format_float_scientific(np.float32(value), unique=True,
                                                              trim="-")


def _names(name, value, header):
    if isinstance(value, str):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"`{name}` must be a tuple of column names. "
                        f"Received: {name}={value!r}") from None
    unknown = [v for v in value if v not in header]
    if unknown:
        raise ValueError(f"`{name}` names columns the table does not have; its columns are "
                         f"{list(header)}. Received: {name}={list(value)}")
    return value


class Table:
    """Named columns of kinds numeric / binary / categorical, and optionally their values.

    Attributes:
      columns: tuple of D column names.
      kinds: tuple of D kinds from `KINDS`.
      categories: tuple of D tuples of texts: the categories of a categorical
        column (code k is `categories[j][k]`), the texts of the two values of a
        binary column (low first), `()` for a numeric column.
      values: tuple of D tuples: the two floats (low, high) of a binary
        column, `()` otherwise.
      x: float32 `[N, D]` in the user's units (codes for categorical
        columns), NaN where missing; None for a description without data.
      cells: the text cells `[N][D]` `x` was read from, or None.
      source: where the table came from (for messages).

    Example:
      >>> t = Table.from_cells(("age", "colour"), [("31", "red"), ("", "blue")])
      >>> t.kinds, t.categories[1], t.x[:, 1]
      (('numeric', 'categorical'), ('blue', 'red'), array([1., 0.], dtype=float32))
    """

    def __init__(self, columns, kinds, categories, values, x=None, cells=None, source="table"):
        self.columns = tuple(columns)
        self.kinds = tuple(kinds)
        self.categories = tuple(tuple(c) for c in categories)
        self.values = tuple(tuple(float(v) for v in vs) for vs in values)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not (len(self.columns) == len(self.kinds) == len(self.categories)
                       == len(self.values)):
            raise ValueError(f"A table description needs one name, kind (one of {KINDS}), "
                             f"category list and value list per column. Received: "
                             f"columns={list(self.columns)}, kinds={list(self.kinds)}")
        self.x, self.cells, self.source = x, cells, source

    # ------------------------------------------------------------ reading

    @classmethod
    def from_cells(cls, header, rows, categorical=(), numeric=(), source="table"):
        """Infers the kinds (see the module docstring) and parses the cells.

        Args:
          header: D column names.
          rows: N rows of D strings (as `keras_vae.sources.read_csv` gives).
          categorical: names of columns to treat as categorical even when
            their values are numbers.
          numeric: names of two-valued number columns to treat as numeric
            (Gaussian) rather than binary.
          source: the path, for messages.

        Raises:
          ValueError: text mixed with numbers in a column, a column with no
            observed value, a number that is not finite, more than
            `MAX_CATEGORIES` categories, unknown or doubly declared names.
        """
        header = tuple(header)
        categorical = _names("categorical", categorical, header)
        numeric = _names("numeric", numeric, header)
        both = sorted(set(categorical) & set(numeric))
        if both:
            raise ValueError(f"A column is either categorical or numeric. Received: {both} in "
                             f"both categorical={list(categorical)} and numeric={list(numeric)}")
        kinds, categories, values = [], [], []
        for j, name in enumerate(header):
            observed = [(i, r[j]) for i, r in enumerate(rows) if not _missing(r[j])]
            where = f"{source}: column {name!r}"
            if not observed:
                raise ValueError(f"{where} has no observed value (every cell is empty or NaN); "
                                 f"drop the column. Received: {len(rows)} missing cells")
            numbers = [(i, t, parse_number(t)) for i, t in observed]
            texts = [(i, t) for i, t, v in numbers if v is None]
            if name in categorical or len(texts) == len(observed):
                distinct = sorted({t for _, t in observed})
                if not texts:  # numbers declared categorical: order by value
                    distinct = sorted(distinct, key=float)
                if len(distinct) > MAX_CATEGORIES:
                    raise ValueError(
                        f"{where} has {len(distinct)} distinct texts, more than the "
                        f"{MAX_CATEGORIES} categories keras_vae models (an identifier or free "
                        f"text? drop the column). Received: e.g. {distinct[:3]}")
                kinds.append("categorical")
                categories.append(tuple(distinct))
                values.append(())
                continue
            if texts:
                i, t = texts[0]
                reason = ("a number that is not finite" if t.lower().lstrip("+-") in (
                    "inf", "infinity") else "text")
                raise ValueError(
                    f"{where} holds numbers but data row {i + 1} holds {reason} {t!r} (a "
                    f"numeric column takes strictly written finite numbers; declare "
                    f"categorical=({name!r},) if the column is a category). Received: {t!r}")
            distinct = sorted({v for _, _, v in numbers})
            if len(distinct) == 2 and name not in numeric:
                text_of = {}
                for _, t, v in numbers:
                    text_of.setdefault(v, t)
                kinds.append("binary")
                categories.append((text_of[distinct[0]], text_of[distinct[1]]))
                values.append(tuple(distinct))
            else:
                kinds.append("numeric")
                categories.append(())
                values.append(())
        table = cls(header, kinds, categories, values, source=source)
        table.x = table.encode(header, rows, source)
        table.cells = [tuple(r) for r in rows]
        return table

    def encode(self, header, rows, source="table"):
        """Parses rows of text cells with this table's columns, kinds and categories.

        Returns:
          float32 `[N, D]`, NaN where a cell is missing.

        Raises:
          ValueError: other column names (or order), text in a numeric
            column, a binary value other than the two known, an unknown
            category; the message names the data row and the column.
        """
        if tuple(header) != self.columns:
            raise ValueError(f"{source}: expected the columns {list(self.columns)} (in this "
                             f"order, as the model was trained on). Received: {list(header)}")
        x = np.full((len(rows), len(self.columns)), np.nan, np.float32)
        lookup = [self._category_lookup(j) for j in range(len(self.columns))]
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                if _missing(text):
                    continue
                x[i, j] = self._parse(i, j, text, lookup[j], source)
        return x

    def _category_lookup(self, j):
        if self.kinds[j] != "categorical":
            return None
        cats = self.categories[j]
        lookup = {t: k for k, t in enumerate(cats)}
        if all(parse_number(t) is not None for t in cats):  # "1" and "1.0" are one category
            lookup.update({parse_number(t): k for k, t in enumerate(cats)})
        return lookup

    def _parse(self, i, j, text, lookup, source):
        name, kind = self.columns[j], self.kinds[j]
        where = f"{source}: data row {i + 1}, column {name!r}"
        if kind == "categorical":
            code = lookup.get(text)
            if code is None and parse_number(text) is not None:
                code = lookup.get(parse_number(text))
            if code is None:
                shown = list(self.categories[j][:10])
                raise ValueError(f"{where}: {text!r} is not one of the column's categories "
                                 f"{shown}{' ...' if len(self.categories[j]) > 10 else ''}. "
                                 f"Received: {text!r}")
            return code
        value = parse_number(text)
        if value is None:
            raise ValueError(f"{where}: expected a finite number (the column is {kind}). "
                             f"Received: {text!r}")
        if kind == "binary" and value not in self.values[j]:
            raise ValueError(f"{where}: the column is binary, taking {self.categories[j][0]} or "
                             f"{self.categories[j][1]}. Received: {text!r}")
        return value

    # ------------------------------------------------------------ writing

    def decode(self, x, cells=None):
        """Rows of text cells for `x [N, D]` (user units, codes for categorical columns).

        Numeric values print as the shortest text of their float32; a binary
        value prints as the text of the nearer of its two values; a code as its
        category's text (rounded, clipped to `0..K-1`); NaN as an empty cell.
        Where `cells` (the rows `x` was read from) holds an observed cell, its
        text is kept exactly as it was.
        """
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise ValueError(f"Expected values of shape (N, {len(self.columns)}). "
                             f"Received: x.shape={x.shape}")
        out = []
        for i, row in enumerate(x):
            texts = []
            for j, v in enumerate(row):
                if cells is not None and not _missing(cells[i][j]):
                    texts.append(cells[i][j])
                elif not np.isfinite(v):
                    texts.append("")
                elif self.kinds[j] == "numeric":
                    texts.append(format_number(v))
                elif self.kinds[j] == "binary":
                    low, high = self.values[j]
                    texts.append(self.categories[j][int(abs(v - high) < abs(v - low))])
                else:
                    k = int(np.clip(np.round(v), 0, len(self.categories[j]) - 1))
                    texts.append(self.categories[j][k])
            out.append(tuple(texts))
        return out

    # ------------------------------------------------------------ statistics

    @property
    def num_categories(self):
        """Per column: K for a categorical column, 0 otherwise."""
        return tuple(len(c) if k == "categorical" else 0
                     for k, c in zip(self.kinds, self.categories))

    def likelihood_statistics(self, x=None):
        """`(shift, scale)` float32 `[D]` mapping the likelihood's standard space to user units.

        Numeric columns: mean and standard deviation of the observed values of
        `x` (default `self.x`; a deviation of 0 becomes 1). Binary columns:
        `low` and `high - low`. Categorical columns: 0 and 1 (codes stay codes).
        """
        x = self.x if x is None else np.asarray(x, np.float64)
        shift, scale = np.zeros(len(self.columns)), np.ones(len(self.columns))
        for j, kind in enumerate(self.kinds):
            if kind == "numeric":
                shift[j], scale[j] = _observed_moments(x[:, j], self.columns[j])
            elif kind == "binary":
                shift[j], scale[j] = self.values[j][0], self.values[j][1] - self.values[j][0]
        return shift.astype(np.float32), scale.astype(np.float32)

    def input_statistics(self, x=None):
        """`(shift, scale)` float32 `[D]` standardising every column (codes included) for an
        encoder: the mean and standard deviation of the observed values (0 -> 1)."""
        x = self.x if x is None else np.asarray(x, np.float64)
        moments = [_observed_moments(x[:, j], c) for j, c in enumerate(self.columns)]
        return (np.array([m[0] for m in moments], np.float32),
                np.array([m[1] for m in moments], np.float32))

    # ------------------------------------------------------------ description

    def description(self):
        """The JSON-able description (no data): columns, kinds, categories, values."""
        return {"columns": list(self.columns), "kinds": list(self.kinds),
                "categories": [list(c) for c in self.categories],
                "values": [list(v) for v in self.values]}

    @classmethod
    def from_description(cls, description, source="table"):
        """The table (without data) of a `description()`."""
        try:
            return cls(description["columns"], description["kinds"],
                       description["categories"], description["values"], source=source)
        except (KeyError, TypeError) as e:
            raise ValueError("A table description is a dict with columns, kinds, categories "
                             f"and values. Received: {description!r:.200}") from e

    def __repr__(self):
        shape = "no data" if self.x is None else f"{self.x.shape[0]} rows"
        cols = ", ".join(f"{c}: {k}" for c, k in zip(self.columns, self.kinds))
        return f"Table({cols}; {shape})"


def _observed_moments(column, name):
    observed = column[np.isfinite(column)]
    if observed.size == 0:
        raise ValueError(f"Column {name!r} has no observed value to learn its statistics from. "
                         f"Received: {column.size} missing values")
    mean, std = float(observed.mean()), float(observed.std())
    return mean, (std if std > 0 and np.isfinite(std) else 1.0)
