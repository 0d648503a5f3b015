"""Compressors for a prediction's arrays: size and single-core speed on a whole slide's predicted values.

Reads a block of rows of ``X`` and the ``lognorm`` layer and a strip of the map's level 0 from the
store that ``benchmarks/predict.py`` leaves (key ``bench``; run it first, with the defaults), and
encodes and decodes each with zarr's default (zstd, level 0) and blosc's codecs, one thread.

    python benchmarks/predict.py && python benchmarks/codecs.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import zarr
from _common import WORK, record
from numcodecs import Blosc, Zstd

CODECS = {
    "zstd level 0 (zarr's default)": Zstd(level=0),
    "blosc lz4, byte shuffle": Blosc("lz4", 5, Blosc.SHUFFLE),
    "blosc lz4, bit shuffle (pixnet's)": Blosc("lz4", 5, Blosc.BITSHUFFLE),
    "blosc zstd 1, bit shuffle": Blosc("zstd", 1, Blosc.BITSHUFFLE),
    "blosc lz4, no shuffle": Blosc("lz4", 5, Blosc.NOSHUFFLE),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=str(WORK / "predict_full.zarr"))
    a = p.parse_args()
    table = f"{a.store}/tables/bench_square_002um"
    block = slice(4_000_000, 4_000_000 + 131_072)
    arrays = {
        "X": zarr.open_array(f"{table}/X")[block],
        "lognorm": zarr.open_array(f"{table}/layers/lognorm")[block],
        "map": zarr.open_array(f"{a.store}/images/bench_map/s0")[:, 1600:1664, 1024:2048],
    }
    Blosc.use_threads = False
    rows = []
    print("| array | codec | size / raw | encode MB/s | decode MB/s |\n|---|---|---|---|---|")
    for name, data in arrays.items():
        data = np.ascontiguousarray(data, np.float32)
        for codec_name, codec in CODECS.items():
            t = time.perf_counter()
            encoded = codec.encode(data)
            enc = time.perf_counter() - t
            t = time.perf_counter()
            codec.decode(encoded)
            dec = time.perf_counter() - t
            mb = data.nbytes / 2**20
            rows.append({"array": name, "codec": codec_name, "ratio": len(encoded) / data.nbytes,
                         "encode_mb_s": mb / enc, "decode_mb_s": mb / dec})  # fmt: skip
            print(f"| {name} | {codec_name} | {rows[-1]['ratio']:.3f} | {mb / enc:.0f} | {mb / dec:.0f} |")
    record("codecs", {"rows": rows})


if __name__ == "__main__":
    main()
