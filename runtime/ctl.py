"""`pac-ctl`: the operator's verbs for a running pac-run (DESIGN §4), over its control endpoint.

    pac-ctl status
    pac-ctl reset --operator ana --reason "cable re-seated, driver back"
    pac-ctl estop --operator ana --reason "person in the cell"
    pac-ctl --control ipc:///run/user/1000/pac-runtime/pac-run-4242.ctl stop --operator ana --reason "end of shift"

Without --control it finds the one pac-run of this user running (runtime/control.py), and names them all when
there are several. Exit codes: 0 done, 1 refused (the reply says why), 2 no pac-run answered or a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from runtime.control import ACTIONS, CLIENT_TIMEOUT_S, VERBS, ControlError, request, running_endpoints

EXIT_DONE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pac-ctl", description="Operator verbs for a running pac-run.")
    p.add_argument("--control", default=None, help="pac-run's control endpoint (default: the one running pac-run)")
    p.add_argument("--timeout", type=float, default=CLIENT_TIMEOUT_S, help="seconds to wait for the reply")
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    verbs = p.add_subparsers(dest="verb", required=True)
    helps = {
        "status": "safety state, fault cause, what still holds it, ticks",
        "reset": "leave FAULT or ESTOP (refused while its condition holds)",
        "estop": "latch ESTOP now: only holds from the next tick",
        "stop": "a clean stop, as SIGINT: hold, confirm, summary, exit",
    }
    for verb in VERBS:
        sub = verbs.add_parser(verb, help=helps[verb])
        if verb in ACTIONS:
            sub.add_argument("--operator", required=True, help="who (goes into the log and the run summary)")
            sub.add_argument("--reason", required=True, help="why")
    return p


def _endpoint(given: str | None) -> str:
    if given:
        return given
    found = running_endpoints()
    if len(found) == 1:
        return found[0]
    if not found:
        raise ControlError("no running pac-run found: pass --control ENDPOINT (pac-run prints it at start-up)")
    raise ControlError("several pac-run are running; pass --control with one of: " + ", ".join(found))


def _show(reply: dict) -> str:
    if "error" in reply:
        return f"malformed request ({reply['error']}): {reply.get('detail', '')}"
    if reply.get("verb") == "status":
        lines = [f"state {reply.get('state')}   ticks {reply.get('ticks')}"]
        if reply.get("fault_cause"):
            lines.append(f"latched by: {reply['fault_cause']}")
        lines += [f"still holds: {c}" for c in reply.get("still_holds", [])]
        if reply.get("hold_causes"):
            lines.append(f"holding for: {', '.join(reply['hold_causes'])}")
        if reply.get("stopping"):
            lines.append(f"stopping: {reply['stopping']}")
        return "\n".join(lines)
    outcome = "done" if reply["ok"] else "REFUSED"
    where = f"at tick {reply.get('tick')} (state {reply.get('state')})"
    return f"{reply.get('verb')} {outcome} {where}: {reply.get('detail')}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        endpoint = _endpoint(args.control)
        reply = request(endpoint, args.verb, getattr(args, "operator", ""), getattr(args, "reason", ""), args.timeout)
    except ControlError as exc:
        print(f"pac-ctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(reply) if args.json else _show(reply), flush=True)
    return EXIT_DONE if reply["ok"] else EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
