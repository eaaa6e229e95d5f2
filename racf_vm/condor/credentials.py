"""The job's credentials, and keeping them from guests that must not have them.

HTCondor hands a job its credentials through its environment and its sandbox: OAuth and
SciTokens in ``$_CONDOR_CREDS`` (``.condor_creds/`` in the sandbox), an X.509 proxy named by
``X509_USER_PROXY``, bearer tokens (``BEARER_TOKEN``, ``BEARER_TOKEN_FILE``), a Kerberos
cache (``KRB5CCNAME``, ``krb5cc_*``). An untrusted image runs code nobody vetted as root in
its guest, so it gets none of them unless its catalog entry says ``credentials = true``.

Pure: the policy as data, applied by the job plan (environment) and by the input archive
(files left out of it).
"""

from __future__ import annotations

import posixpath
from typing import Iterable, Mapping

# Variables whose value is a credential or names one.
CREDENTIAL_VARS = frozenset({
    "_CONDOR_CREDS", "X509_USER_PROXY", "X509_USER_CERT", "X509_USER_KEY", "X509_CERT_DIR",
    "BEARER_TOKEN", "BEARER_TOKEN_FILE", "KRB5CCNAME", "KRB5_KTNAME", "KRB5_CLIENT_KTNAME",
    "SCITOKEN", "SCITOKENS_FILE", "_CONDOR_SCITOKENS_FILE", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS",
})
# Variables that name a file or directory holding a credential (left out of the input).
CREDENTIAL_PATH_VARS = ("_CONDOR_CREDS", "X509_USER_PROXY", "X509_USER_CERT", "X509_USER_KEY",
                        "BEARER_TOKEN_FILE", "KRB5CCNAME", "SCITOKENS_FILE", "_CONDOR_SCITOKENS_FILE",
                        "GOOGLE_APPLICATION_CREDENTIALS")
# Sandbox names that are credentials whatever the environment says.
CREDENTIAL_NAMES = (".condor_creds",)
CREDENTIAL_PREFIXES = ("krb5cc_", "x509up_")


def strip_credentials(env: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The environment without any credential variable."""
    return tuple((k, v) for k, v in env if k not in CREDENTIAL_VARS)


def withheld_paths(env: Mapping[str, str], workdir: str, names: Iterable[str]) -> tuple[str, ...]:
    """Sandbox-relative paths of credentials to leave out of the input archive: those the
    environment names inside ``workdir``, and every top-level entry in ``names`` (the
    sandbox's listing) that looks like one."""
    out = set()
    for var in CREDENTIAL_PATH_VARS:
        value = env.get(var, "")
        if var == "KRB5CCNAME":
            kind, sep, rest = value.partition(":")
            value = rest if sep and kind in ("FILE", "DIR") else (value if not sep else "")
        if not value:
            continue
        path = posixpath.normpath(posixpath.join(workdir, value))
        if path.startswith(workdir.rstrip("/") + "/"):
            out.add(posixpath.relpath(path, workdir))
    for name in names:
        if name in CREDENTIAL_NAMES or name.startswith(CREDENTIAL_PREFIXES):
            out.add(name)
    return tuple(sorted(out))
