//! The original system's ZeroMQ peers, as Python scripts run with
//! Debian's python3-zmq.

/// Debian's python3, which has python3-zmq (a python3 earlier in PATH may
/// not).
pub const PYTHON: &str = "/usr/bin/python3";

/// The original subscriber's reading, as it is written: subscribe to "",
/// split every message on `|` into four fields, print them. Its endpoint is
/// its first argument.
pub const LEGACY_SUBSCRIBER: &str = r#"
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.SUB)
s.connect(sys.argv[1])
s.setsockopt_string(zmq.SUBSCRIBE, "")
while True:
    host, jail, action, attacker = s.recv_string().split("|")
    print(host, jail, action, attacker, flush=True)
"#;
