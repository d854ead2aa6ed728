"""HCCL rank table (version 1.0 JSON) for data-parallel training on Ascend: write one, check one, list its devices.

The file names every device of the job with its rank::

    {"version": "1.0", "server_count": "1",
     "server_list": [{"server_id": "10.0.0.1", "host_nic_ip": "reserve",
                      "device": [{"device_id": "0", "device_ip": "192.168.100.101", "rank_id": "0"}, ...]}],
     "status": "completed"}

Command line::

    python -m src.train.rank_table write --out hccl_8p.json [--device_ids 0,1,2,3] [--server_id IP]
                                   [--device_ips IP,IP,... | --hccn_conf /etc/hccn.conf]
    python -m src.train.rank_table merge --out hccl_16p.json server_a.json server_b.json   # several servers, one job
    python -m src.train.rank_table check hccl_8p.json
    python -m src.train.rank_table devices hccl_8p.json [--server_id IP]   # "RANK_SIZE N" then "rank_id device_id" lines

Device IPs default to the ``address_<device_id>=IP`` lines of /etc/hccn.conf, as Ascend servers configure them.
For a job over several servers, write one table on each server, merge them (ranks are numbered server after
server, in the order given) and give the merged file to ``run_distribute_train_ascend.sh`` on every server.
"""
import ipaddress
import json
import os
import socket

from src.cli import run_command
from src.config import ArgumentParser

HCCN_CONF = "/etc/hccn.conf"


class RankTableError(ValueError):
    """A rank table that does not follow the version 1.0 format; the message names the file and the field."""


def read_hccn_conf(path=HCCN_CONF):
    """``address_<device_id>=<ip>`` lines of an hccn.conf file -> {device_id (int): ip (str)}."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found; give the device IPs with --device_ips")
    addresses = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key.startswith("address_") and key[len("address_"):].isdigit():
                addresses[int(key[len("address_"):])] = value.strip()
    return addresses


def make_rank_table(device_ids, device_ips, server_id):
    """Rank table dict for the devices of one server; rank i is ``device_ids[i]``."""
    device_ids = [int(d) for d in device_ids]
    if len(device_ips) != len(device_ids):
        raise ValueError(f"device_ips: expected one IP per device ({len(device_ids)}), got {len(device_ips)}")
    devices = [{"device_id": str(dev), "device_ip": str(ip), "rank_id": str(rank)}
               for rank, (dev, ip) in enumerate(zip(device_ids, device_ips))]
    table = {"version": "1.0", "server_count": "1",
             "server_list": [{"server_id": str(server_id), "device": devices, "host_nic_ip": "reserve"}],
             "status": "completed"}
    validate_rank_table(table)
    return table


def merge_rank_tables(tables):
    """One rank table for a job over the servers of ``tables`` (each a valid table), in the order given; rank ids
    are renumbered 0..N-1 server after server. Raises RankTableError when a server appears twice."""
    servers, rank = [], 0
    for table in tables:
        for server in table["server_list"]:
            devices = []
            for device in sorted(server["device"], key=lambda d: int(d["rank_id"])):
                devices.append(dict(device, rank_id=str(rank)))
                rank += 1
            servers.append(dict(server, device=devices))
    merged = {"version": "1.0", "server_count": str(len(servers)), "server_list": servers, "status": "completed"}
    validate_rank_table(merged, source="merged rank table")
    return merged


def _int_field(value, where):
    if not isinstance(value, str) or not value.isdigit():
        raise RankTableError(f"{where}: expected a non-negative integer written as a string, got {value!r}")
    return int(value)


def _ip_field(value, where):
    try:
        ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise RankTableError(f"{where}: expected an IPv4 address, got {value!r}") from None
    return value


def validate_rank_table(table, source="rank table"):
    """Check every field of a version 1.0 rank table; raise RankTableError naming ``source`` and the bad field.

    Returns the total number of ranks.
    """
    def field(obj, key, where):
        if not isinstance(obj, dict) or key not in obj:
            raise RankTableError(f"{source}: {where}{key}: missing")
        return obj[key]

    if not isinstance(table, dict):
        raise RankTableError(f"{source}: expected a JSON object at the top level")
    if field(table, "version", "") != "1.0":
        raise RankTableError(f"{source}: version: expected \"1.0\", got {table['version']!r}")
    if field(table, "status", "") != "completed":
        raise RankTableError(f"{source}: status: expected \"completed\", got {table['status']!r}")
    servers = field(table, "server_list", "")
    if not isinstance(servers, list) or not servers:
        raise RankTableError(f"{source}: server_list: expected a non-empty list of servers")
    count = _int_field(field(table, "server_count", ""), f"{source}: server_count")
    if count != len(servers):
        raise RankTableError(f"{source}: server_count: says {count} but server_list has {len(servers)} servers")
    ranks, server_ids = [], set()
    for s, server in enumerate(servers):
        where = f"server_list[{s}]."
        server_id = _ip_field(field(server, "server_id", where), f"{source}: {where}server_id")
        if server_id in server_ids:
            raise RankTableError(f"{source}: {where}server_id: server {server_id} is listed twice")
        server_ids.add(server_id)
        devices = field(server, "device", where)
        if not isinstance(devices, list) or not devices:
            raise RankTableError(f"{source}: {where}device: expected a non-empty list of devices")
        seen_ids = set()
        for d, device in enumerate(devices):
            dwhere = f"{where}device[{d}]."
            device_id = _int_field(field(device, "device_id", dwhere), f"{source}: {dwhere}device_id")
            if device_id in seen_ids:
                raise RankTableError(f"{source}: {dwhere}device_id: device {device_id} is listed twice")
            seen_ids.add(device_id)
            _ip_field(field(device, "device_ip", dwhere), f"{source}: {dwhere}device_ip")
            ranks.append((_int_field(field(device, "rank_id", dwhere), f"{source}: {dwhere}rank_id"), dwhere))
    numbers = sorted(r for r, _ in ranks)
    if numbers != list(range(len(ranks))):
        for expected, (rank, where) in zip(range(len(ranks)), sorted(ranks)):
            if rank != expected:
                raise RankTableError(f"{source}: {where}rank_id: rank ids must be 0..{len(ranks) - 1} with "
                                     f"each used once; found {rank} where {expected} was expected")
    return len(ranks)


def load_rank_table(path):
    """Read and validate a rank table file -> dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"rank table not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            table = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RankTableError(f"{path}: not valid JSON ({err})") from None
    validate_rank_table(table, source=path)
    return table


def local_devices(table, server_id=None):
    """[(rank_id, device_id)] of the server this process runs on, sorted by rank.

    With one server that is the server; with several, ``server_id`` (or the SERVER_ID environment variable) picks it,
    else the server whose id is one of this host's addresses.
    """
    servers = table["server_list"]
    server_id = server_id or os.environ.get("SERVER_ID")
    if server_id is None and len(servers) > 1:
        try:
            host_ips = set(socket.gethostbyname_ex(socket.gethostname())[2])
        except OSError:
            host_ips = set()
        matches = [s for s in servers if s["server_id"] in host_ips]
        if len(matches) != 1:
            raise RankTableError("rank table lists several servers and none matches this host; set SERVER_ID")
        server = matches[0]
    elif server_id is None:
        server = servers[0]
    else:
        found = [s for s in servers if s["server_id"] == server_id]
        if not found:
            raise RankTableError(f"server_id {server_id!r} is not in the rank table's server_list")
        server = found[0]
    return sorted((int(d["rank_id"]), int(d["device_id"])) for d in server["device"])


def main(argv=None):
    parser = ArgumentParser(description="Write, check or list an HCCL rank table (version 1.0).")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write a rank table for the devices of this server")
    write.add_argument("--out", required=True, help="JSON file to write")
    write.add_argument("--device_ids", default="0,1,2,3,4,5,6,7", help="comma-separated device ids, rank order")
    write.add_argument("--device_ips", default=None, help="comma-separated device IPs (default: from --hccn_conf)")
    write.add_argument("--hccn_conf", default=HCCN_CONF, help="file with address_<device_id>=IP lines")
    write.add_argument("--server_id", default=None, help="this server's IP (default: from the host name)")
    merge = sub.add_parser("merge", help="join the tables of several servers into the table of one job")
    merge.add_argument("--out", required=True, help="JSON file to write")
    merge.add_argument("tables", nargs="+", help="rank tables, one per server, in rank order")
    check = sub.add_parser("check", help="validate a rank table")
    check.add_argument("path")
    devices = sub.add_parser("devices", help="print RANK_SIZE and the 'rank_id device_id' pairs of this server")
    devices.add_argument("path")
    devices.add_argument("--server_id", default=None)
    args = parser.parse_args(argv)

    if args.command == "write":
        device_ids = [int(d) for d in args.device_ids.split(",") if d.strip()]
        if args.device_ips:
            device_ips = [ip.strip() for ip in args.device_ips.split(",")]
        else:
            addresses = read_hccn_conf(args.hccn_conf)
            missing = [d for d in device_ids if d not in addresses]
            if missing:
                raise RankTableError(f"{args.hccn_conf}: no address_<id> line for devices {missing}")
            device_ips = [addresses[d] for d in device_ids]
        server_id = args.server_id or socket.gethostbyname(socket.gethostname())
        table = make_rank_table(device_ids, device_ips, server_id)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=4)
        print(f"wrote {args.out}: {len(device_ids)} devices on server {server_id}")
    elif args.command == "merge":
        table = merge_rank_tables([load_rank_table(path) for path in args.tables])
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=4)
        print(f"wrote {args.out}: {validate_rank_table(table)} ranks on {table['server_count']} servers")
    elif args.command == "check":
        table = load_rank_table(args.path)
        print(f"{args.path}: ok, {validate_rank_table(table)} ranks on {len(table['server_list'])} server(s)")
    else:
        table = load_rank_table(args.path)
        print(f"RANK_SIZE {validate_rank_table(table)}")
        for rank_id, device_id in local_devices(table, args.server_id):
            print(f"{rank_id} {device_id}")
    return 0


if __name__ == "__main__":
    run_command(main)
