"""Calibration on speakers the network never saw: held-out speakers set aside by training, recorded training speakers,
refusals with one line, and a small trained network whose held-out calibration keeps its promises on a third group
of speakers."""
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

import eval as eval_script
import train
from src.checkpoint import read_training_speakers
from src.config import load_config
from src.data.lists import HELDOUT_DIR, TRAIN_LIST, build_train_list, choose_holdout, read_train_list
from src.data.synthetic import make_corpus
from src.evaluate import calibrate as calibrate_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ["--channels", "32", "--mfa_channels", "96", "--embedding_size", "16", "--attention_channels", "16",
         "--se_channels", "16", "--res2net_scale", "2"]
MARGIN = 0.15       # largest actDCF(0.05) - minDCF(0.05) and Cllr - minCllr of held-out calibration (measured below)
EVAL = ["--bucket_seconds", "[]", "--max_eval_seconds", "2.0", "--eval_batch_size", "8"]      # one graph shape


# ---------------------------------------------------------------- the hold-out split
def test_holdout_takes_a_count_or_a_share_and_refuses_too_few():
    speakers = [f"id{i:05d}" for i in range(20)]
    chosen = choose_holdout(speakers, 5, seed=3)
    assert len(chosen) == 5 and chosen == sorted(chosen) and set(chosen) <= set(speakers)
    assert choose_holdout(list(reversed(speakers)), 0.25, seed=3) == chosen          # share of 20 = 5, same draw
    assert choose_holdout(speakers, 5, seed=4) != chosen and choose_holdout(speakers, 0, seed=3) == []
    with pytest.raises(ValueError, match="holdout_speakers: got 2.5; expected a share below 1 or a whole number"):
        choose_holdout(speakers, 2.5, seed=0)
    with pytest.raises(ValueError, match="holdout_speakers: 19 sets aside 19 of the 20 speakers; at least 2"):
        choose_holdout(speakers, 19, seed=0)


# ---------------------------------------------------------------- a small network trained on generated speakers
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """16 generated speakers, 6 of them held out of training, a small network trained on the other 10 for 120 steps;
    8 further speakers make the evaluation trials (the third group)."""
    tmp = tmp_path_factory.mktemp("heldout")
    corpus = make_corpus(str(tmp / "corpus"), num_train_speakers=16, num_test_speakers=8, utts_per_speaker=8,
                         seconds=(1.0, 2.0), seed=11, augment_folders=False, progress=False, trials_per_utterance=6)
    lists, run = str(tmp / "lists"), str(tmp / "run")
    args = MODEL + ["--train_dir", corpus["train_dir"], "--train_list_dir", lists, "--holdout_speakers", "6",
                    "--output_dir", run, "--aug_prob", "0", "--musan_dir", "", "--rir_dir", "", "--speed_perturb",
                    "false", "--specaugment", "false", "--crop_seconds", "1.0", "--batch_size", "8",
                    "--num_workers", "1", "--num_epochs", "12", "--max_lr", "0.005", "--lr_step_size", "60",
                    "--checkpoint_every_steps", "1000", "--keep_checkpoints", "1", "--log_every_steps", "20"]
    assert train.main(args) == 0          # in this process: the checkpoint is what the tests below use
    checkpoint = os.path.join(run, "checkpoints", "ckpt_step00000120.ckpt")
    common = MODEL + EVAL + ["--checkpoint", checkpoint, "--train_list_dir", lists, "--test_dir", corpus["test_dir"],
                             "--trials", corpus["trials"], "--calibration_seconds", "[1.0, 2.0]",
                             "--calibration_utts_per_speaker", "8", "--calibration_quality", "[duration]"]
    return corpus, lists, checkpoint, common, tmp


def test_training_sets_speakers_aside_and_its_checkpoints_name_the_speakers_they_saw(trained):
    corpus, lists, checkpoint, _, _ = trained
    train_list = read_train_list(os.path.join(lists, TRAIN_LIST))
    heldout = read_train_list(os.path.join(lists, HELDOUT_DIR, TRAIN_LIST))
    assert train_list.num_speakers == 10 and heldout.num_speakers == 6 and len(heldout) == 6 * 8
    assert set(train_list.speakers) | set(heldout.speakers) == set(os.listdir(corpus["train_dir"]))
    assert read_training_speakers(checkpoint) == sorted(train_list.speakers)
    # The lists are reused while nothing changed, and the split is made again when the hold-out changes.
    again = build_train_list(corpus["train_dir"], lists, holdout=6, seed=1234, progress=False)
    assert again.speakers == train_list.speakers
    other = build_train_list(corpus["train_dir"], lists, holdout=0.5, seed=1234, progress=False)
    assert other.num_speakers == 8
    build_train_list(corpus["train_dir"], lists, holdout=6, seed=1234, progress=False)      # back as trained


def test_calibration_on_training_speakers_is_refused_with_one_line(trained):
    _, lists, checkpoint, common, tmp = trained
    done = subprocess.run([sys.executable, "-m", "src.calibrate"] + common + [
        "--calibration_source", os.path.join(lists, TRAIN_LIST), "--calibration", str(tmp / "refused.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: calibration_source {os.path.join(lists, TRAIN_LIST)}: 10 of its 10 speakers "
                           f"trained the checkpoint"), done.stderr[-2000:]
    assert "--allow_training_speakers true" in last and not os.path.exists(tmp / "refused.json")


def test_heldout_calibration_keeps_its_promises_on_new_speakers(trained):
    """(b) calibrated on the 6 held-out speakers (the default) against (a) on the 10 training speakers (allowed
    explicitly), both evaluated on the trials of 8 further speakers.

    Measured on 2026-12-03 with this fixture (the third group's 251 target and 369 nontarget trials):
    (b) actDCF(0.05) 1.00 against minDCF 0.92, Cllr 0.785 against minCllr 0.724;
    (a) actDCF(0.05) 2.53 against minDCF 0.99, Cllr 2.278 against minCllr 0.734.
    MARGIN (0.15) is about twice (b)'s gaps; (a) misses it by a factor of ten."""
    corpus, lists, checkpoint, common, tmp = trained
    held = calibrate_command.calibrate(load_config(common + ["--calibration", str(tmp / "heldout.json")]))
    assert held.trials["source"] == os.path.abspath(os.path.join(lists, HELDOUT_DIR, TRAIN_LIST))
    assert held.trials["num_speakers"] == 6 and held.trials["training_speakers"] == 0
    with pytest.raises(ValueError, match="10 of its 10 speakers trained the checkpoint"):
        calibrate_command.calibrate(load_config(common + ["--calibration_source", os.path.join(lists, TRAIN_LIST),
                                                          "--calibration", str(tmp / "training.json")]))
    seen = calibrate_command.calibrate(load_config(common + [
        "--calibration_source", os.path.join(lists, TRAIN_LIST), "--allow_training_speakers", "true",
        "--calibration", str(tmp / "training.json")]))
    assert seen.trials["training_speakers"] == 10 and "OPTIMISTIC" in seen.trial_speakers()

    results = {}
    for name in ("heldout", "training"):
        summary = eval_script.evaluate(load_config(common + [
            "--calibration", str(tmp / f"{name}.json"), "--eval_output_dir", str(tmp / f"eval_{name}"),
            "--embedding_cache", str(tmp / "embeddings.npz")]))
        results[name] = summary["trial_lists"]["trials"]
    held_m, seen_m = (results[n]["metrics"]["calibrated"] for n in ("heldout", "training"))
    for m in (held_m, seen_m):
        m["gaps"] = (m["act_dcf_p0.05"] - m["min_dcf_p0.05"], m["cllr"] - m["min_cllr"])
    assert max(held_m["gaps"]) <= MARGIN, held_m
    assert min(seen_m["gaps"]) > MARGIN, seen_m
    # The summary sets the promised rates beside those measured at the same thresholds.
    point = {row["p_target"]: row for row in results["heldout"]["operating_points"]}[0.05]
    assert point["promised_false_accept"] == held.operating_point(0.05)["false_accept"]
    llrs = np.array([float(line.split()[2]) for line in open(results["heldout"]["llr_file"])])
    labels = np.array([int(line.split()[3]) for line in open(results["heldout"]["llr_file"])])
    assert point["measured_false_accept"] == pytest.approx(np.mean(llrs[labels == 0] >= np.log(19)), abs=1e-6)
    assert point["measured_false_reject"] == pytest.approx(np.mean(llrs[labels == 1] < np.log(19)), abs=1e-6)


def test_a_checkpoint_without_a_record_is_checked_against_the_recipe(tmp_path):
    """An imported checkpoint records no training speakers: the recipe's training_speakers (a regular expression
    or a file) stands in for the record, and without either the calibration is refused."""
    checkpoint = str(tmp_path / "imported.ckpt")
    ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.zeros(2, np.float32))}], checkpoint)
    vox1 = {"id10001", "id10002"}
    with pytest.raises(ValueError, match="imported.ckpt: records no training speakers and the recipe names none"):
        calibrate_command.check_training_speakers("vox1", vox1, checkpoint, "", allow=False)
    assert calibrate_command.check_training_speakers("vox1", vox1, checkpoint, "", allow=True) is None
    assert calibrate_command.check_training_speakers("vox1", vox1, checkpoint, "id0[0-9]{4}", allow=False) == 0
    with pytest.raises(ValueError, match="vox2: 1 of its 2 speakers trained the checkpoint .*'id0\\[0-9\\]\\{4\\}'"):
        calibrate_command.check_training_speakers("vox2", {"id00012", "id10001"}, checkpoint, "id0[0-9]{4}", False)
    listed = tmp_path / "speakers.txt"
    listed.write_text("id10002 0\nid10003 1\n")
    with pytest.raises(ValueError, match="1 of its 2 speakers trained the checkpoint"):
        calibrate_command.check_training_speakers("vox1", vox1, checkpoint, str(listed), False)
    with pytest.raises(ValueError, match="training_speakers: 'id0\\[' is neither a file nor a regular expression"):
        calibrate_command.check_training_speakers("vox1", vox1, checkpoint, "id0[", False)


@pytest.mark.parametrize("name, trained, unseen", [
    ("wespeaker_ecapa512_voxceleb", ["id00012", "id09272"], ["id10001", "id11251"]),     # VoxCeleb2 dev
    ("3dspeaker_ecapa_voxceleb", ["id00012"], ["id10270", "id10001"]),
    ("speechbrain_ecapa_voxceleb", ["id00012", "id10001", "id10310", "id11251"], ["id10270", "id10299", "id10309"]),
    ("zoo_ecapa_voxceleb", ["id10269", "id10310"], ["id10270", "id10300"]),              # VoxCeleb1 + 2 dev
    ("3dspeaker_ecapa_cnceleb", ["id00000", "id00799", "id10000"], ["id00800", "id00999"]),
])
def test_imported_recipes_name_their_training_speakers(name, trained, unseen):
    """The recipe of an imported model stands in for the speaker record its checkpoint lacks: the speakers it names
    are the corpora the model trained on, and the calibration set it names is outside them."""
    import re
    cfg = load_config(["--config", os.path.join(ROOT, "configs", "pretrained", f"{name}.yaml")])
    pattern = re.compile(cfg.training_speakers)
    assert all(pattern.fullmatch(s) for s in trained) and not any(pattern.fullmatch(s) for s in unseen)
    if "voxceleb" in name and not name.startswith(("speechbrain", "zoo")):
        assert cfg.calibration_source == "/data/voxceleb1/dev/wav"


def test_cohort_and_calibration_speakers_must_differ_when_the_scores_use_the_cohort(tmp_path):
    for speaker in ("id00001", "id00002", "id00003"):
        (tmp_path / "cohort" / speaker / "v").mkdir(parents=True)
        (tmp_path / "cohort" / speaker / "v" / "00001.wav").write_bytes(b"")     # only the names are read
    cohort = str(tmp_path / "cohort")
    asnorm = load_config(["--score_norm", "asnorm", "--cohort_source", cohort])
    with pytest.raises(ValueError, match=f"calibration_source cal: 1 of its speakers are also in cohort_source "
                                         f"{cohort} \\(e.g. \\['id00002'\\]\\)"):
        calibrate_command.check_cohort_disjoint(asnorm, "cal", {"id00002", "id10001"}, [])
    calibrate_command.check_cohort_disjoint(asnorm, "cal", {"id10001", "id10002"}, [])
    mean_only = load_config(["--subtract_mean", "true", "--cohort_source", cohort])     # a mean is no cohort score
    calibrate_command.check_cohort_disjoint(mean_only, "cal", {"id00002"}, ["duration"])
    with pytest.raises(ValueError, match="also in cohort_source"):
        calibrate_command.check_cohort_disjoint(mean_only, "cal", {"id00002"}, ["imposter_mean"])


def test_a_recorded_checkpoint_is_checked_against_the_recipe_too(trained):
    """A run fine-tuned from an imported model records only its own speakers; the recipe's training_speakers (kept
    from the imported model's recipe) still counts."""
    _, lists, checkpoint, _, _ = trained
    heldout = set(read_train_list(os.path.join(lists, HELDOUT_DIR, TRAIN_LIST)).speakers)
    assert calibrate_command.check_training_speakers("held", heldout, checkpoint, "", allow=False) == 0
    one = sorted(heldout)[0]
    with pytest.raises(ValueError, match=f"held: 1 of its 6 speakers trained the checkpoint \\(e.g. \\['{one}'\\], "
                                         f"from the 10 speakers .* records and training_speakers '{one}'\\)"):
        calibrate_command.check_training_speakers("held", heldout, checkpoint, one, allow=False)
