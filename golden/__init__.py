"""The golden data of the original Lua code and the port's comparisons with it, which parity.py drives:
which cases a golden set holds (sets), reading a case and the report (cases), the networks (networks), the
data pipeline (data), Torch7's generator and a real main.lua run (torch7_run). golden/compact is the set kept
in the repository."""
