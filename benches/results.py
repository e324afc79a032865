"""The load driver's JSON results (one object a line), read as the benchmark scripts' summaries
read them. Their embedded python imports it (`PYTHONPATH=benches`)."""
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

    def lat(self, label, q):
        """The median of latency quantile `q` (`p50`, `p99`, `p999`, …) over those runs."""
        return median(r["latency_us"][q] for r in self.by.get(label, []))
