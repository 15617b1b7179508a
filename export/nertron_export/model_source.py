"""``--model`` of ``nertron train`` and ``nertron export``: an HF checkpoint folder or a hub id, checked before
minutes of work, so that a typo is reported in the option's name rather than as transformers' hub error."""

from __future__ import annotations

from pathlib import Path

from nertron.errors import FolderIsFile, MissingFile


def check_model_source(model: str | Path, option: str = "--model") -> None:
    """Raises unless ``model`` is a folder with an HF ``config.json`` or could be a hub id: of the hub's form,
    not a path into a local folder (``artifacts/run``, where ``artifacts`` exists, is a missing folder), and in
    the local hub cache when the hub is offline (``HF_HUB_OFFLINE=1``). Whether an online hub has the id is
    left to the download."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(model)  # as transformers will read it: "~" is not expanded there
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MissingFile(f"{option} {model}: the folder has no config.json, so it is not an HF checkpoint")
        return
    if path.exists():
        raise FolderIsFile(f"{option} {model}: a file, not a checkpoint folder or a hub id")
    if path.is_symlink():
        raise MissingFile(f"{option} {model}: a broken symbolic link")
    if path.parent != Path(".") and path.parent.is_dir():
        raise MissingFile(f"{option} {model}: no such folder in {path.parent}")
    try:
        validate_repo_id(str(model))
    except HFValidationError:
        raise MissingFile(f"{option} {model}: no such folder (and not a hub id)") from None
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(str(model), "config.json"), str):
        raise MissingFile(
            f"{option} {model}: no such folder, and no hub model of that id in the local cache "
            "(HF_HUB_OFFLINE is set: nothing is downloaded)"
        )
