"""banshare_restart_settings: what of a banshare.toml a watcher reads only
at start, so that the role restarts it only when that changed and reloads
it (SIGHUP) otherwise."""

import tomllib

# What `banshare watch` re-reads on SIGHUP (src/cli/watch.rs,
# reload_policy: the policy settings and the trust policy). Everything
# else, known to this list or not, counts as read at start only.
RELOADED = {
    "watch": {
        "ignoreip",
        "ignoreself",
        "bantime",
        "max_bantime",
        "min_nodes",
        "findtime",
        "max_prefix_v4",
        "max_prefix_v6",
    },
    "trust": {
        "keys",
        "require_signed",
        "allow_unsigned_logger",
        "max_bans_per_node_per_minute",
        "breaker_cooldown",
        "operators",
    },
}


def banshare_restart_settings(text):
    """The configuration without the settings SIGHUP re-reads; a text that
    is not TOML is returned whole (any change to it then restarts)."""
    try:
        config = tomllib.loads(text or "")
    except tomllib.TOMLDecodeError:
        return {"unparsed": text}
    for section, keys in RELOADED.items():
        table = config.get(section)
        if isinstance(table, dict):
            for key in keys:
                table.pop(key, None)
    return config


def banshare_restart_needed(result):
    """Whether a template task's registered result (with diff: true)
    changed a setting SIGHUP does not re-read. Its diff is a list of
    before/after texts, or, when only the file's attributes were compared,
    of before/after mappings of those: that is no change of content. A
    changed result
    whose diff holds no text to compare (the file larger than
    max_diff_size, binary, or not read: `dst_larger`, `dst_binary`, an
    empty diff) cannot tell, and counts as a restart: a missed restart
    leaves a setting unapplied, a needless one costs a moment."""
    if not isinstance(result, dict):
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
            if banshare_restart_settings(before) != banshare_restart_settings(after):
                return True
    return bool(result.get("changed")) and not compared


class FilterModule:
    def filters(self):
        return {
            "banshare_restart_settings": banshare_restart_settings,
            "banshare_restart_needed": banshare_restart_needed,
        }
