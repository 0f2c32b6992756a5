"""The library: every run's record in SQLite and its audio files, under the data folder.

`store` is the Library itself; `records` the row type; `schema` the database and its migrations;
`files` atomic writes; `export` and `importer` the ways in and out of it.
"""

from services.library.records import RunRecord
from services.library.schema import LibraryError
from services.library.store import AlreadyInLibrary, Library, RunNotFound

__all__ = ["AlreadyInLibrary", "Library", "LibraryError", "RunNotFound", "RunRecord"]
