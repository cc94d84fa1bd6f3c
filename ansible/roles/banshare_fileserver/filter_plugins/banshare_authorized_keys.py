"""banshare_keys_dropped: whether a rewrite of the banshare account's
authorized_keys took a key out (or narrowed it), so that the sessions
still open with it must be ended: sshd reads authorized_keys only at
login."""


def _key_lines(text):
    return {
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }


def banshare_keys_dropped(result):
    """Whether a template task's registered result (with diff: true) lost
    a key line: one in the file before that is not in it after (a node
    removed, a key revoked, its options changed). Lines only added are
    not. A changed result whose diff holds no text to compare counts as
    dropped: ending sessions that reconnect costs a moment, keeping a
    revoked one open keeps its write access to the log."""
    if not isinstance(result, dict) or not result.get("changed"):
        return False
    diffs = result.get("diff", [])
    if isinstance(diffs, dict):
        diffs = [diffs]
    compared = False
    for diff in diffs:
        before, after = diff.get("before"), diff.get("after")
        if isinstance(before, dict) and isinstance(after, dict):
            compared = True
        elif isinstance(before, str) and isinstance(after, str):
            compared = True
            if _key_lines(before) - _key_lines(after):
                return True
    return not compared


class FilterModule:
    def filters(self):
        return {"banshare_keys_dropped": banshare_keys_dropped}
