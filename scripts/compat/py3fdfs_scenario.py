"""Runs a FastDFS client we did not write (PyPI py3fdfsv2) against an fdfs-rs cluster.

usage: python py3fdfs_scenario.py CLIENT_CONF

Each check is byte-verified; the last line is "N passed, M failed" and the exit status is
non-zero when anything failed. py3fdfsv2's list, slave and metadata calls are broken against
FastDFS itself, and its modify ignores non-zero offsets, so those are not used.
"""

import os
import random
import sys
import tempfile
import traceback
import zlib

from fdfs_client.client import Fdfs_client, get_tracker_conf

passed = 0
failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"ok    {name}")
    except Exception:  # noqa: BLE001 - report every failure and go on
        failed += 1
        print(f"FAIL  {name}")
        traceback.print_exc()


def main():
    client = Fdfs_client(get_tracker_conf(sys.argv[1]))
    rng = random.Random(1234)
    state = {}

    def upload_buffer():
        data = b"hello world, fastdfs!\n"
        ret = client.upload_by_buffer(data, file_ext_name="txt")
        file_id = ret["Remote file_id"]
        assert file_id.startswith(b"group1/M00/"), ret
        assert file_id.endswith(b".txt"), ret
        assert len(file_id.split(b"/", 1)[1]) == 44, ret
        state["buffer"] = (file_id, data)

    def upload_filename():
        data = bytes(rng.getrandbits(8) for _ in range(100_000))
        with tempfile.NamedTemporaryFile(suffix=".jpg", delete=False) as handle:
            handle.write(data)
        try:
            ret = client.upload_by_filename(handle.name)
        finally:
            os.unlink(handle.name)
        file_id = ret["Remote file_id"]
        assert file_id.endswith(b".jpg"), ret
        assert ret["Uploaded size"] not in (0, None), ret
        state["file"] = (file_id, data)

    def download_whole():
        for file_id, data in state.values():
            ret = client.download_to_buffer(file_id)
            assert ret["Content"] == data, (file_id, len(ret["Content"]), len(data))

    def download_range():
        file_id, data = state["file"]
        ret = client.download_to_buffer(file_id, offset=1000, down_bytes=5000)
        assert ret["Content"] == data[1000:6000], len(ret["Content"])
        ret = client.download_to_buffer(file_id, offset=99_990, down_bytes=0)
        assert ret["Content"] == data[99_990:], len(ret["Content"])

    def download_to_file():
        file_id, data = state["file"]
        with tempfile.TemporaryDirectory() as tmp:
            target = os.path.join(tmp, "out.jpg")
            client.download_to_file(target, file_id)
            with open(target, "rb") as handle:
                assert handle.read() == data

    def file_info():
        file_id, data = state["buffer"]
        size, created, crc, ip = client.query_file_info(file_id)
        assert size == len(data), size
        assert crc & 0xFFFFFFFF == zlib.crc32(data), hex(crc)
        assert ip.rstrip(b"\0") == b"127.0.0.1", ip
        assert created > 1_700_000_000, created

    def delete():
        for file_id, _ in list(state.values()):
            client.delete_file(file_id)
            try:
                client.download_to_buffer(file_id)
            except Exception:  # noqa: BLE001 - the client raises on status 2
                continue
            raise AssertionError(f"{file_id!r} still downloadable after delete")

    def big_upload():
        data = bytes(rng.getrandbits(8) for _ in range(2 * 1024 * 1024))
        ret = client.upload_by_buffer(data, file_ext_name="bin")
        file_id = ret["Remote file_id"]
        got = client.download_to_buffer(file_id)["Content"]
        assert got == data, (len(got), len(data))
        size, _, crc, _ = client.query_file_info(file_id)
        assert size == len(data) and crc & 0xFFFFFFFF == zlib.crc32(data), (size, hex(crc))
        client.delete_file(file_id)

    def appender():
        def content(file_id):
            return client.download_to_buffer(file_id)["Content"]

        ret = client.upload_appender_by_buffer(b"hello\n", file_ext_name="log")
        file_id = ret["Remote file_id"]
        assert file_id.endswith(b".log"), ret
        assert content(file_id) == b"hello\n"
        client.append_by_buffer(b"world\n", file_id)
        assert content(file_id) == b"hello\nworld\n"
        client.modify_by_buffer(b"HE", file_id, offset=0)
        assert content(file_id) == b"HEllo\nworld\n"
        size, _, crc, _ = client.query_file_info(file_id)
        assert size == 12 and crc & 0xFFFFFFFF == zlib.crc32(b"HEllo\nworld\n"), (size, hex(crc))
        client.truncate_file(5, file_id)
        assert content(file_id) == b"HEllo"
        ret = client.regenerate_appender_filename(file_id)
        new_id = ret["Remote file_id"]
        new_id = new_id if isinstance(new_id, bytes) else new_id.encode()
        assert new_id != file_id and new_id[-7:] == file_id[-7:], (new_id, file_id)
        assert content(new_id) == b"HEllo"
        client.delete_file(new_id)

    check("upload_by_buffer", upload_buffer)
    check("upload_by_filename", upload_filename)
    check("download_to_buffer whole files", download_whole)
    check("download_to_buffer by range", download_range)
    check("download_to_file", download_to_file)
    check("query_file_info", file_info)
    check("delete_file", delete)
    check("2 MiB upload", big_upload)
    check("appender: upload, append, modify at 0, truncate, regenerate", appender)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
