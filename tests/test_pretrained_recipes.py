"""The recipe files of the public checkpoints (configs/pretrained/*.yaml, listed in docs/importing.md): each loads,
names its checkpoint, and holds exactly the settings the importer derives from the peer's own model built with the
peer's own code at the sizes its toolkit publishes (tests/data/published_ecapa_configs.json, copied from each
toolkit's configuration file, named there), not at the recipe's own sizes; the importer leaves such a file as it is
and rewrites one that disagrees."""
import glob
import importlib
import json
import os
import re

import pytest
import yaml

from src.config import load_config
from src.import_weights import (CALIBRATION_KEYS, SPEAKERLAB_FRONT_END, SPEECHBRAIN_FRONT_END, WESPEAKER_FRONT_END,
                                ZOO_FRONT_END, ZOO_MODEL_CONFIG, imported_settings, recipe_body, speechbrain_settings,
                                wespeaker_settings, write_recipe)
from src.model.ecapa_tdnn import ECAPA_TDNN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "pretrained", "*.yaml")))
IMPORT_LINE = re.compile(r"^#\s+python -m src\.import_weights --format (\S+) (\S+) (\S+)$", re.M)
with open(os.path.join(ROOT, "tests", "data", "published_ecapa_configs.json"), encoding="utf-8") as _f:
    PUBLISHED = json.load(_f)


def peer_settings(name):
    """What the importer derives for the public model ``name`` (a recipe's file name), built with the peer's own
    code from its toolkit's published configuration (skips when the peer's package is missing). The older zoo's
    layout is checked against its published parameter shapes in tests/test_zoo_checkpoint.py."""
    if name == "zoo_ecapa_voxceleb":
        return imported_settings(ECAPA_TDNN(**ZOO_MODEL_CONFIG), ZOO_FRONT_END)
    published = PUBLISHED[name]
    fmt, args = published["format"], published["args"]
    if fmt == "wespeaker":
        from tests.test_import_wespeaker import wespeaker_models
        model = getattr(wespeaker_models(), published["factory"])(**args)
        settings_of, front_end = wespeaker_settings, WESPEAKER_FRONT_END
    else:
        pytest.importorskip("torch", reason="the reference models need PyTorch")
        module_name, class_name = published["class"].rsplit(".", 1)
        if fmt == "speechbrain":
            from tests.speechbrain_ref import speechbrain_module
            module = speechbrain_module(module_name)
            front_end = SPEECHBRAIN_FRONT_END
        else:
            module = pytest.importorskip(module_name, reason="3D-Speaker's model code is not installed")
            front_end = SPEAKERLAB_FRONT_END
        model = getattr(module, class_name)(**args)
        settings_of = speechbrain_settings
    state = {key: value.numpy() for key, value in model.state_dict().items()}
    return imported_settings(ECAPA_TDNN(**settings_of(state)), front_end)


def test_every_recipe_has_a_published_configuration():
    names = {os.path.splitext(os.path.basename(path))[0] for path in RECIPES}
    assert names == set(PUBLISHED) - {"_about"} | {"zoo_ecapa_voxceleb"}
    for name in names - {"zoo_ecapa_voxceleb"}:
        assert PUBLISHED[name]["source"].startswith("https://"), name


def test_every_format_has_a_recipe():
    formats = {IMPORT_LINE.search(open(path).read()).group(1) for path in RECIPES}
    assert formats == {"mindspore_zoo", "speechbrain", "wespeaker", "3dspeaker"}


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_holds_what_the_importer_derives(path, tmp_path):
    """A user who downloads the model and runs the import line of the recipe gets a checkpoint whose settings are
    the recipe's, so eval.py / export.py --config <recipe> work on it."""
    text = open(path).read()
    fmt, _, checkpoint = IMPORT_LINE.search(text).groups()
    recipe = yaml.safe_load(text)
    name = os.path.splitext(os.path.basename(path))[0]
    assert checkpoint == recipe["checkpoint"] == f"pretrained/{name}.ckpt"
    assert name == "zoo_ecapa_voxceleb" or PUBLISHED[name]["format"] == fmt
    cfg = load_config(["--config", path])
    settings = peer_settings(name)
    assert {key: cfg[key] for key in settings} == settings
    assert {key: recipe[key] for key in settings} == settings
    calibration = {key: recipe[key] for key in CALIBRATION_KEYS if key in recipe}
    body = recipe_body(checkpoint, path, settings, fmt == "speechbrain", calibration)
    assert yaml.safe_load("\n".join(body)) == recipe

    copy = tmp_path / "pretrained" / os.path.basename(path)          # the importer keeps a recipe that agrees
    copy.parent.mkdir()
    copy.write_text(text.replace("base: ../ecapa-tdnn_config.yaml",
                                 f"base: {os.path.join(ROOT, 'configs', 'ecapa-tdnn_config.yaml')}"))
    kept = copy.read_text()
    write_recipe(fmt, "downloaded.pt", os.path.join(ROOT, checkpoint), str(copy), settings, fmt == "speechbrain")
    assert copy.read_text() == kept
    changed = dict(settings, embedding_size=settings["embedding_size"] + 1)   # ... and rewrites one that does not
    write_recipe(fmt, "downloaded.pt", os.path.join(ROOT, checkpoint), str(copy), changed, fmt == "speechbrain")
    assert yaml.safe_load(copy.read_text())["embedding_size"] == settings["embedding_size"] + 1
    assert {key: yaml.safe_load(copy.read_text()).get(key) for key in CALIBRATION_KEYS} == \
        {key: recipe.get(key) for key in CALIBRATION_KEYS}                   # what it says of the training data stays
    assert "imported from" in copy.read_text()
