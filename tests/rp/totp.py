#!/usr/bin/env python3
"""The RFC 6238 code of a base32 secret now (SHA-1, 6 digits, 30 s), as an authenticator app
computes it: Python's standard library only, so the tests check gatehouse's TOTP against an
implementation that is not its own.

    totp.py BASE32_SECRET [--step-offset N]
"""

import base64
import hashlib
import hmac
import struct
import sys
import time


def totp(secret_b32, at=None, step=30, digits=6):
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


if __name__ == "__main__":
    offset = 0
    if len(sys.argv) > 3 and sys.argv[2] == "--step-offset":
        offset = int(sys.argv[3])
    print(totp(sys.argv[1], at=time.time() + 30 * offset))
