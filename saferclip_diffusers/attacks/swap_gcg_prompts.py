"""swap-gcg's prompt side: the adversarial prompt's layout per mode, its initialisation, and the candidate
swaps with their validity rules (every accepted candidate re-tokenizes to itself with every tokenizer of the
pipeline, differs from the current prompt and holds no banned word; see :mod:`.swap_gcg`)."""

from __future__ import annotations

import torch

from .ban import contains_banned_word, sanitize
from .conditioning import Slot, core_ids

MODES = ("free", "prefix", "suffix")
INITS = ("letters", "carrier", "random")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)


class PromptSearch:
    """Mixin of :class:`~.swap_gcg.SwapGCG`: everything about prompts and candidates (``self.budget``)."""

    def _layout(self, slots: list[Slot], target: str) -> tuple[list[int], list[int], int]:
        """(carrier ids, target ids, adversarial length)."""
        tok = slots[0].tokenizer
        target_ids = core_ids(tok, target)
        b = self.budget
        if b.mode == "free":
            return [], target_ids, b.length or max(1, min(len(target_ids), 75))
        carrier = core_ids(tok, sanitize(target, "mma" if b.ban == "mma" else "mma-words"))
        k = b.length or 5
        return carrier[: 75 - k], target_ids, k

    def _assemble(self, carrier: list[int], adv: torch.Tensor) -> torch.Tensor:
        """(B, k) adversarial ids -> (B, core) ids in the mode's order."""
        c = torch.tensor(carrier, dtype=torch.long).expand(adv.shape[0], -1)
        if self.budget.mode == "prefix":
            return torch.cat([adv, c], dim=1)
        if self.budget.mode == "suffix":
            return torch.cat([c, adv], dim=1)
        return adv

    def _adv_positions(self, carrier: list[int], n: int) -> list[int]:
        start = 1 + (len(carrier) if self.budget.mode == "suffix" else 0)
        return list(range(start, start + n))

    def _valid(self, slots: list[Slot], cores: torch.Tensor, current: str | None) -> list[str | None]:
        """Decoded text of each core row, or None when it does not survive re-tokenization / the word check."""
        texts = [decode(slots[0].tokenizer, row.tolist()) for row in cores]
        ok = [t != current and not contains_banned_word(t, self.budget.ban) for t in texts]
        for slot in slots:
            again = slot.tokenizer(texts, add_special_tokens=False).input_ids
            ok = [o and list(a) == row.tolist() for o, a, row in zip(ok, again, cores, strict=True)]
        return [t if o else None for t, o in zip(texts, ok, strict=True)]

    def _init(self, slots, carrier, target_ids, n, allowed, gen) -> torch.Tensor:
        b, tok = self.budget, slots[0].tokenizer
        if b.init not in INITS:  # an explicit initial adversarial text
            adv = torch.tensor(core_ids(tok, b.init), dtype=torch.long)
            if len(adv) != n:
                raise ValueError(
                    f"init text {b.init!r} has {len(adv)} tokens; this attack optimises {n} (set length={len(adv)})"
                )
            if self._valid(slots, self._assemble(carrier, adv[None]), None)[0] is None:
                raise ValueError(
                    f"init text {b.init!r} does not round-trip through every tokenizer or holds a banned word"
                )
            return adv
        letter_ids = [i for i in (tok.convert_tokens_to_ids(c + "</w>") for c in LETTERS) if allowed[i]]
        pool = torch.nonzero(allowed).flatten()
        for attempt in range(20):
            if b.init == "letters" or attempt >= 10:
                ids = [letter_ids[int(j)] for j in torch.randint(len(letter_ids), (n,), generator=gen)]
            elif b.init == "random":
                ids = pool[torch.randint(len(pool), (n,), generator=gen)].tolist()
            else:  # carrier: the sanitized target, banned ids dropped, padded with random letters
                ids = [i for i in core_ids(tok, sanitize(decode(tok, target_ids))) if allowed[i]][:n]
                ids += [
                    letter_ids[int(j)] for j in torch.randint(len(letter_ids), (n - len(ids),), generator=gen)
                ]
            adv = torch.tensor([ids], dtype=torch.long)
            if self._valid(slots, self._assemble(carrier, adv), None)[0] is not None:
                return adv[0]
        raise ValueError(
            f"could not build a valid initial adversarial prompt of {n} tokens (init={b.init!r})"
        )

    def _candidates(
        self, slots, carrier, adv, grad, allowed, current_text, gen
    ) -> tuple[torch.Tensor, list[str]]:
        b = self.budget
        n = len(adv)
        grad = grad.masked_fill(~allowed[None], float("inf"))
        k = min(b.top_k, int(allowed.sum()))
        top = (-grad).topk(k, dim=1).indices  # (n, k): largest predicted decrease first
        kept_ids, kept_text = [], []
        positions = (torch.arange(b.candidates) * n) // b.candidates
        todo = positions
        for _ in range(4):  # first draw + up to 3 resamples of invalid slots
            if len(todo) == 0:
                break
            cand = adv.expand(len(todo), -1).clone()
            picks = top[todo, torch.randint(k, (len(todo),), generator=gen)]
            cand[torch.arange(len(todo)), todo] = picks
            texts = self._valid(slots, self._assemble(carrier, cand), current_text)
            good = [i for i, t in enumerate(texts) if t is not None]
            kept_ids += [cand[i] for i in good]
            kept_text += [texts[i] for i in good]
            todo = todo[[i for i, t in enumerate(texts) if t is None]]
        if not kept_ids:
            return adv.new_zeros((0, n)), []
        return torch.stack(kept_ids), kept_text
