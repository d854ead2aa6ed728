"""Rank table tool: written tables follow the HCCL 1.0 format; bad tables are rejected naming the field."""
import copy
import json
import os
import subprocess
import sys

import pytest

from src.train.rank_table import (RankTableError, load_rank_table, local_devices, make_rank_table, merge_rank_tables,
                            read_hccn_conf, validate_rank_table)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_written_table_has_the_hccl_layout(tmp_path):
    table = make_rank_table([0, 1, 4, 5], ["192.168.100.101", "192.168.101.101", "192.168.100.100",
                                           "192.168.101.100"], "10.0.0.7")
    assert table["version"] == "1.0" and table["status"] == "completed" and table["server_count"] == "1"
    server = table["server_list"][0]
    assert server["server_id"] == "10.0.0.7"
    assert server["device"][2] == {"device_id": "4", "device_ip": "192.168.100.100", "rank_id": "2"}
    assert local_devices(table) == [(0, 0), (1, 1), (2, 4), (3, 5)]
    assert validate_rank_table(table) == 4


def test_command_line_writes_from_hccn_conf_and_lists_devices(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text("address_0=192.168.100.101\nnetmask_0=255.255.255.0\naddress_1=192.168.101.101\n"
                    "address_2=192.168.102.101\n")
    assert read_hccn_conf(str(conf)) == {0: "192.168.100.101", 1: "192.168.101.101", 2: "192.168.102.101"}
    out = tmp_path / "hccl_2p.json"
    run = [sys.executable, "-m", "src.train.rank_table"]
    subprocess.run(run + ["write", "--out", str(out), "--device_ids", "1,2", "--hccn_conf", str(conf),
                          "--server_id", "10.1.2.3"], cwd=ROOT, check=True, capture_output=True)
    table = load_rank_table(str(out))
    assert [d["device_ip"] for d in table["server_list"][0]["device"]] == ["192.168.101.101", "192.168.102.101"]
    listing = subprocess.run(run + ["devices", str(out)], cwd=ROOT, check=True, capture_output=True, text=True)
    assert listing.stdout.split("\n")[:3] == ["RANK_SIZE 2", "0 1", "1 2"]


def _good():
    return make_rank_table([0, 1], ["192.168.100.101", "192.168.101.101"], "10.0.0.1")


BREAKAGES = [
    (lambda t: t.update(version="2.0"), "version"),
    (lambda t: t.pop("status"), "status: missing"),
    (lambda t: t.update(server_count="2"), "server_count"),
    (lambda t: t.update(server_list=[]), "server_list"),
    (lambda t: t["server_list"][0].update(server_id="host-a"), r"server_list\[0\]\.server_id"),
    (lambda t: t["server_list"][0]["device"][1].update(device_ip="192.168.1"), r"device\[1\]\.device_ip"),
    (lambda t: t["server_list"][0]["device"][1].update(device_id="x"), r"device\[1\]\.device_id"),
    (lambda t: t["server_list"][0]["device"][1].update(device_id="0"), r"device\[1\]\.device_id.*twice"),
    (lambda t: t["server_list"][0]["device"][0].pop("rank_id"), r"device\[0\]\.rank_id: missing"),
    (lambda t: t["server_list"][0]["device"][1].update(rank_id="3"), r"device\[1\]\.rank_id"),
    (lambda t: t.update(server_count="2", server_list=t["server_list"] * 2), r"server_list\[1\]\.server_id.*twice"),
]


@pytest.mark.parametrize("breakage,field", BREAKAGES)
def test_bad_tables_are_rejected_naming_the_field(tmp_path, breakage, field):
    table = copy.deepcopy(_good())
    breakage(table)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(table))
    with pytest.raises(RankTableError, match=field) as err:
        load_rank_table(str(path))
    assert str(path) in str(err.value)


def test_not_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{\"version\": ")
    with pytest.raises(RankTableError, match="broken.json: not valid JSON"):
        load_rank_table(str(path))
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(RankTableError, match="binary.json: not valid JSON"):
        load_rank_table(str(binary))


def test_tables_of_two_servers_merge_into_one_job(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVER_ID", raising=False)
    a = make_rank_table([0, 1], ["192.168.100.101", "192.168.101.101"], "10.0.0.1")
    b = make_rank_table([4, 5, 6], ["192.168.100.102", "192.168.101.102", "192.168.102.102"], "10.0.0.2")
    paths = []
    for name, table in (("a.json", a), ("b.json", b)):
        paths.append(str(tmp_path / name))
        with open(paths[-1], "w") as f:
            json.dump(table, f)
    out = tmp_path / "job.json"
    run = [sys.executable, "-m", "src.train.rank_table"]
    subprocess.run(run + ["merge", "--out", str(out)] + paths, cwd=ROOT, check=True, capture_output=True)
    job = load_rank_table(str(out))
    assert job["server_count"] == "2" and validate_rank_table(job) == 5
    assert local_devices(job, "10.0.0.1") == [(0, 0), (1, 1)]
    assert local_devices(job, "10.0.0.2") == [(2, 4), (3, 5), (4, 6)]
    listing = subprocess.run(run + ["devices", str(out), "--server_id", "10.0.0.2"], cwd=ROOT, check=True,
                             capture_output=True, text=True)
    assert listing.stdout.split("\n")[:4] == ["RANK_SIZE 5", "2 4", "3 5", "4 6"]
    with pytest.raises(RankTableError, match=r"server_list\[1\]\.server_id: server 10.0.0.1 is listed twice"):
        merge_rank_tables([a, a])
    with pytest.raises(RankTableError, match="several servers and none matches this host"):
        local_devices(job)
