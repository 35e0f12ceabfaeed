"""One training epoch of tar shards on a real S3 server (moto_server on 127.0.0.1), read two ways: streamed
(data.shard_reading: stream, one GET per shard) and at random (one ranged GET per sample), with the GET
requests counted on the client and images/s (decode + RandomResizedCrop(224), 1 process, the ImageNet sample
in shards of 100). Rounds interleaved; medians printed. Asserts nothing.

Usage: python bench/shard_stream_s3.py [ROUNDS]   (default 2; needs ../shared/data/imagenet-sample-1000.tar)
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_throughput import tree_from_sample  # noqa: E402

BATCH = 64


def moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("moto_server did not start")


def epoch(spec: str, reading: str, gets: list) -> tuple[float, int]:
    from adaptnet.data import prepare_data
    from adaptnet.loop.config import DataConfig

    cfg = DataConfig(dataset=spec, holdout=0, workers=0, shard_reading=reading)
    data = prepare_data(cfg, BATCH, BATCH, seed=0)
    gets.clear()
    start, n = time.perf_counter(), 0
    for _, labels in data.train:
        n += len(labels)
    return n / (time.perf_counter() - start), len(gets)


def main(rounds: int) -> None:
    import boto3

    from adaptnet.data import readers
    from adaptnet.data.shards import write_shards

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    server = moto(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            boto3.client("s3").create_bucket(Bucket="bench")
            index = write_shards(str(tree_from_sample(Path(tmp))), "s3://bench/imagenet-sample", shard_size=100)
        gets: list = []

        def counted():
            client = boto3.client("s3")
            client.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: gets.append(1))
            return client

        readers.s3_client = counted
        rates = {"stream": [], "random": []}
        counts = {}
        for _ in range(rounds):
            for reading in rates:
                rate, counts[reading] = epoch("s3://bench/imagenet-sample", reading, gets)
                rates[reading].append(rate)
    finally:
        os.killpg(server.pid, 15)
        server.wait()
    shards = sum(1 for name in index["shards"] if name.startswith("train"))
    print(f"one epoch of 1,000 training images in {shards} shards on moto_server, 1 process, decode + crop(224):")
    for reading, label in (("stream", "streamed shards"), ("random", "one read per sample")):
        print(f"  {label:<20} GET requests {counts[reading]:5d}   images/s {statistics.median(rates[reading]):6.1f}")
    print(f"streamed / per-sample images/s: {statistics.median(rates['stream']) / statistics.median(rates['random']):.2f}×")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
