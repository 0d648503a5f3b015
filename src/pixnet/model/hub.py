"""Encoders from the Hugging Face hub: ``hf-hub:<org>/<repo>[@revision]`` -> a local folder.

The files are fetched one by one with ``huggingface_hub.hf_hub_download`` (into its usual cache,
so a second call, or an offline one with ``HF_HUB_OFFLINE=1``, reads the cache): ``config.json``,
``preprocessor_config.json`` when there is one, and the *first* weights file the repo has of
:data:`HUB_WEIGHTS` (repos that ship both formats are downloaded once, not twice). All land in
one snapshot folder, which is then read as a local checkpoint folder.

Failures are turned into one ``ValueError`` that says what to do (accept the licence and log in,
check the connection, or pass a local folder), without the library's traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: Weight files looked for on the hub, in order of preference.
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def hub_repo(name: str) -> str | None:
    """``"org/repo"`` of a hub name (``"hf-hub:org/repo@rev"``), None for anything else."""
    return name.removeprefix("hf-hub:").partition("@")[0] if name.startswith("hf-hub:") else None


def hub_folder(name: str) -> Path:
    """Fetch ``hf-hub:<org>/<repo>[@revision]``'s config and weights; the local snapshot folder.

    Needs the internet the first time (and, for gated models, an accepted licence and a login).

    Raises
    ------
    ValueError
        The hub cannot be reached and the files are not cached, the repo is gated or private,
        does not exist, or holds no config or weights; the message names the fix.

    """
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, _, revision = name.removeprefix("hf-hub:").partition("@")

    def fetch(filename: str) -> Path:
        return Path(huggingface_hub.hf_hub_download(repo, filename, revision=revision or None))

    try:
        folder = fetch("config.json").parent
        for optional in ("preprocessor_config.json",):
            try:
                fetch(optional)
            except EntryNotFoundError:
                pass
        found, offline = None, None
        for weights in HUB_WEIGHTS:
            try:
                found = fetch(weights)
                break
            except LocalEntryNotFoundError as err:  # not cached, and the hub cannot be asked: try the next
                offline = err
            except EntryNotFoundError:  # the repo has no such file
                pass
        if found is None and offline is not None:
            raise offline
    except Exception as err:  # noqa: BLE001  # every hub failure becomes one error that names its fix
        raise _hub_error(name, repo, err) from None
    if found is None:
        raise ValueError(
            f"The hub repo {repo!r} has none of {', '.join(HUB_WEIGHTS)}: it is not a timm or transformers "
            "checkpoint pixnet can read. Download the weights and pass encoder=<timm name>, encoder_weights=<file>."
        )
    logger.info("encoder %s: %s", name, folder)
    return folder


def _hub_error(name: str, repo: str, err: Exception) -> ValueError:
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local = "or download the folder once where the hub is reachable and pass its path: encoder='/path/to/folder'"
    login = "log in with `hf auth login` (older huggingface_hub: `huggingface-cli login`) or set HF_TOKEN"
    what = f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if isinstance(err, GatedRepoError):
        why = (f"{repo!r} is gated: accept its licence on https://huggingface.co/{repo} with your account, then "
               f"{login}; {local}")  # fmt: skip
    elif isinstance(err, RevisionNotFoundError):
        why = f"{name!r} names a revision (after '@') that {repo!r} does not have: check it, or drop '@...'"
    elif isinstance(err, RepositoryNotFoundError):
        why = (f"{repo!r} was not found: check the name, and if it is private or gated, {login} with an account that "
               f"has access (https://huggingface.co/{repo}); {local}")  # fmt: skip
    elif isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError, OSError)):
        why = (f"the Hugging Face hub cannot be reached and {repo!r} is not in the local cache: connect to the "
               f"internet (and unset HF_HUB_OFFLINE), {local}")  # fmt: skip
    elif isinstance(err, ValueError):  # huggingface_hub's check of the name
        why = f"{name!r} is not a valid 'hf-hub:<org>/<repo>[@revision]' name"
    else:
        why = f"check the name and the connection; for gated models accept the licence and {login}; {local}"
    return ValueError(f"Cannot fetch encoder {name!r} from the Hugging Face hub {what}: {why}.")
