"""The load driver's JSON results (one object a line), read as the benchmark scripts' summaries
read them. Their embedded python imports it (`PYTHONPATH=benches`).

`throughput_rps` is accepts per second (`throughput_counts` = "accept"; in files written
before the harness audit it counted rejects too). A ratio between runs is refused when any of
them was answered with a reject: a reject costs a server less than an accept, so its rate and
CPU per request are not the workload's."""
import json
import statistics


def median(values):
    """The median of the values that are not None; NaN when none is left."""
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else float("nan")


class Results:
    """Every run of a results file, in order, and the same by label."""

    def __init__(self, path):
        self.runs = [json.loads(line) for line in open(path) if line.strip()]
        self.by = {}
        for r in self.runs:
            self.by.setdefault(r["label"], []).append(r)

    def med(self, label, key):
        """The median of `key` over the runs labelled `label`."""
        return median(r.get(key) for r in self.by.get(label, []))

    def lat(self, label, q, to="arrival"):
        """The median of latency quantile `q` (`p50`, `p99`, `p999`, …) over those runs, to
        the answer's `arrival` at the driver's socket (the kernel's stamp), to its `read` by
        the driver, on the `wire` (from the send's hand-over to the kernel), or of the
        driver's `late` sends (open loop). Files written before the stamps have only the read
        (as `latency_us`)."""
        def one(r):
            if to in ("wire", "late"):
                h = r.get({"wire": "wire_latency_us", "late": "send_lateness_us"}[to])
                return h[q] if h else None
            if to == "read" and r.get("latency_to") == "arrival":
                return r["read_latency_us"][q]
            if to == "arrival" and r.get("latency_to") != "arrival":
                return None
            return r["latency_us"][q]
        return median(one(r) for r in self.by.get(label, []))

    def rounds(self, labels):
        """The runs of `labels` by round, in the order they ran (the file's): a round ends
        where one of its labels comes again. Each round is a list of runs."""
        out, cur = [], []
        for r in self.runs:
            if r["label"] not in labels:
                continue
            if any(c["label"] == r["label"] for c in cur):
                out.append(cur)
                cur = []
            cur.append(r)
        if cur:
            out.append(cur)
        return out

    def ratio(self, a, b, key="throughput_rps"):
        """The ratio of the medians of `key`, labels `a` over `b`, as text: "3.59", or
        "INVALID (…)" when a run of either label had rejects."""
        return ratio_text(self.by.get(a, []), self.by.get(b, []), key)


def rejected(runs):
    """Why runs cannot be compared — "LABEL: N rejects (first: 'Reply-Message')" for each label
    with rejects, joined — or None."""
    why = {}
    for r in runs:
        if r.get("reject"):
            n, first = why.get(r["label"], (0, None))
            why[r["label"]] = (n + r["reject"], first or r.get("first_reject"))
    if not why:
        return None
    return "; ".join(f"{label}: {n} rejects (first: {first!r})" for label, (n, first) in why.items())


def ratio_text(runs_a, runs_b, key="throughput_rps"):
    """median(key over runs_a) / median(key over runs_b) as text, or "INVALID (…), no ratio"
    when any run of either side had a reject."""
    why = rejected(list(runs_a) + list(runs_b))
    if why:
        return f"INVALID, no ratio ({why})"
    a, b = median(r.get(key) for r in runs_a), median(r.get(key) for r in runs_b)
    return f"{a / b:.2f}" if b else "n/a (nothing accepted)"
