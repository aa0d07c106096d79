"""Reads simulated meters with pymodbus, an independent Modbus implementation,
decoding each field exactly as the device profile (TOML) describes it.

usage: pymodbus_read.py PROFILE HOST PORT UNIT [UNIT...]
prints one JSON object per unit, then one with the refusals it observed.
"""
import json
import sys
import tomllib

from pymodbus.client import ModbusTcpClient


def call(fn, **kw):
    # pymodbus >= 3.10 names the unit `device_id`, earlier 3.x `slave`.
    unit = kw.pop("unit")
    try:
        return fn(**kw, device_id=unit)
    except TypeError:
        return fn(**kw, slave=unit)


def read(client, function, address, count, unit):
    fn = client.read_input_registers if function == 4 else client.read_holding_registers
    rr = call(fn, address=address, count=count, unit=unit)
    if rr.isError():
        raise SystemExit(f"unit {unit}: read {function}/{address}/{count} failed: {rr}")
    return rr.registers


def words_to_int(words, order, signed):
    if order in ("CDAB", "DCBA"):
        words = list(reversed(words))
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    value = 0
    for w in words:
        value = (value << 16) | w
    bits = 16 * len(words)
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


WORDS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "u64": 4}


def main():
    profile_path, host, port, *units = sys.argv[1:]
    with open(profile_path, "rb") as f:
        profile = tomllib.load(f)
    client = ModbusTcpClient(host, port=int(port), timeout=5)
    if not client.connect():
        raise SystemExit(f"cannot connect to {host}:{port}")
    for unit in map(int, units):
        out = {"unit": unit}
        for name, field in profile["fields"].items():
            if name == "alarms":
                word = read(client, field["function"], field["address"], 1, unit)[0]
                out["alarms"] = sorted(k for k, bit in field["bits"].items() if word >> bit & 1)
                continue
            typ = field["type"]
            words = read(client, field["function"], field["address"], WORDS[typ], unit)
            raw = words_to_int(words, field.get("word_order", "ABCD"), typ.startswith("i"))
            scale = float(field.get("scale", "1"))
            out[name] = raw if scale == 1.0 else round(raw * scale, 6)
        print(json.dumps(out))
    unit = int(units[0])
    wr = call(client.write_register, address=0, value=0, unit=unit)
    missing = call(client.read_input_registers, address=0, count=16, unit=200)
    print(json.dumps({
        "write_exception": getattr(wr, "exception_code", None),
        "unknown_unit_exception": getattr(missing, "exception_code", None),
    }))
    client.close()


if __name__ == "__main__":
    main()
