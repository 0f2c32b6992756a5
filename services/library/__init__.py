"""The library: every run's record in SQLite and its audio files, under the data folder.

`store` is Library, the one front, joining `rows` (one run's row and its files), `queries`
(pages, search, filters) and `accounting` (spending and the size cap); `records` is the row
type and its rules; `schema` the database and its migrations; `layout` where a run's files
live; `files` atomic writes; `export` and `importer` the ways in and out of it.
"""

from services.library.records import RunRecord
from services.library.rows import AlreadyInLibrary, RunNotFound
from services.library.schema import LibraryError
from services.library.store import Library

__all__ = ["AlreadyInLibrary", "Library", "LibraryError", "RunNotFound", "RunRecord"]
