"""The resume cursor every batch stream of the loop shares: which epoch, how many of its
batches were already handed out. ``fit`` saves ``state_dict()`` in each checkpoint and calls
``set_epoch`` / ``load_state_dict`` on resume; subclasses add what else must match."""

from __future__ import annotations


class EpochCursor:
    """``epoch`` / ``position`` bookkeeping for a resumable, seeded batch stream."""

    seed: int
    epoch: int = 0
    position: int = 0  # batches of the current epoch already handed out

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
