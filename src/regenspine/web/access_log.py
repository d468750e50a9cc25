"""The access log without query strings.

uvicorn logs every request as `client - "METHOD path?query HTTP/1.1" status`. A search carries
the patient's name, PESEL or MRN in its query string (`/patients?q=...`), and an access log is
read, shipped and kept by people and systems that have no business with patient data. The
filter keeps uvicorn's logger, format and arguments and drops everything after the `?`: the
path still says which page or record was asked for, and the audit log says who asked.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
# uvicorn's arguments: client address, method, path with query string, HTTP version, status.
_PATH = 2
_ARGUMENTS = 5


class WithoutQueryString(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == _ARGUMENTS:
            path = args[_PATH]
            if isinstance(path, str):
                record.args = (*args[:_PATH], path.partition("?")[0], *args[_PATH + 1 :])
        return True


_FILTER = WithoutQueryString()


def keep_query_strings_out_of_the_access_log() -> None:
    """Idempotent: a logger holds one filter object once."""
    logging.getLogger(ACCESS_LOGGER).addFilter(_FILTER)
