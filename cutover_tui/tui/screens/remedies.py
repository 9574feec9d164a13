"""The backfill's anomalies, class by class: the rule, the rows now, and the remedies (each
shown with what it changes and its SQL before it runs), or the loss accepted with a reason."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Static

from ...ops import remedies
from ...ops.remedies import ClassState, RemedyPlan
from ...store.journal import JournalEntry
from ..compat.footer import Footer
from ..console import console_of
from ..text import literal
from .confirm import Confirm, TypedConfirm

SHOWN_IDS = 200  # `cutover remedy show CLASS --export PATH` writes every one
IDS_PAGE = 100


class RemediesScreen(Screen):
    HELP = ("Every error class the backfill's rules report: the rule behind it, its rows now, and the "
            "remedies an experienced operator would reach for. 1, 2 pick a remedy: it shows the rows and "
            "tables it will change and its SQL, and runs on legacy in one transaction only after y; every "
            "row it touches is kept, so `cutover remedy undo N` puts legacy back exactly. l accepts the "
            "loss of the class's rows with a reason. Run the backfill again afterwards.")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "remedy(0)", "Remedy 1"),
        Binding("2", "remedy(1)", "Remedy 2"),
        Binding("l", "accept_loss", "Accept loss"),
        Binding("right_square_bracket", "page(1)", "Next ids", key_display="]"),
        Binding("left_square_bracket", "page(-1)", "Previous ids", key_display="["),
        Binding("r", "reload", "Reload"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.states: list[ClassState] = []
        self.page = 0  # of the selected class's ids
        self.ids: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield DataTable(id="remedy-classes", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="remedy-detail"):
            yield Static(Text("counting the rows of every class…", style="dim"), id="remedy-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("class", "rows now", "accepted", "remedies")
        self.action_reload()

    def action_reload(self) -> None:
        console_of(self).run_engine(remedies.states, self._show, group="remedies", exclusive=True)

    def _show(self, states: list[ClassState]) -> None:
        self.states = states
        table = self.query_one(DataTable)
        table.clear()
        for state in states:
            table.add_row(literal(state.key), Text(f"{state.count:,}", style="bold red" if state.count else "green"),
                          Text(f"{state.accepted:,}" if state.accepted else ""), ", ".join(state.choices))
        self._describe()

    @property
    def selected(self) -> ClassState | None:
        row = self.query_one(DataTable).cursor_row
        return self.states[row] if 0 <= row < len(self.states) else None

    def on_data_table_row_highlighted(self) -> None:
        self.page = 0
        self._load_ids()

    def action_page(self, step: int) -> None:
        state = self.selected
        if state is not None and 0 <= (self.page + step) * IDS_PAGE < max(state.count, 1):
            self.page += step
            self._load_ids()

    def _load_ids(self) -> None:
        state = self.selected
        self.ids = []
        self._describe()
        if state is not None and state.count:
            console_of(self).run_engine(partial(remedies.id_page, key=state.key, offset=self.page * IDS_PAGE,
                                                limit=IDS_PAGE), self._show_ids, group="remedy-ids", exclusive=True)

    def _show_ids(self, ids: list[str]) -> None:
        self.ids = ids
        self._describe()

    def _describe(self) -> None:
        state = self.selected
        text = self.query_one("#remedy-text", Static)
        if state is None:
            text.update("")
            return
        choices = [Text.assemble((f"{n}  ", "bold"), (f"--choice {name}: ", "bold"), literal(summary))
                   for n, (name, summary) in enumerate(state.choices.items(), start=1)]
        first = self.page * IDS_PAGE
        page = (Text(f"ids {first + 1:,}–{first + len(self.ids):,} of {state.count:,}  ([ ] pages):", style="dim"),
                literal("  ".join(self.ids))) if self.ids else ()
        what = (Text("l  accepts the loss of the rows, with a reason", style="dim") if state.kind == "error" else
                Text("a warning: the rows land as the rule says; nothing to remedy", style="dim"))
        text.update(Group(Text(state.issue, style="bold"), literal(f"rule: {state.rule}"),
                          Text(f"{state.count:,} rows now; {state.accepted:,} accepted as lost"), *choices, what,
                          *page))

    def action_remedy(self, index: int) -> None:
        state = self.selected
        if state is None or index >= len(state.choices) or not state.count:
            self.notify("Pick a class with rows now and one of its remedies.", severity="warning", timeout=4)
            return
        choice = list(state.choices)[index]
        console_of(self).run_engine(partial(remedies.plan, key=state.key, choice_name=choice), self._ask,
                                    group="remedies")

    def _ask(self, plan: RemedyPlan) -> None:
        changes = ", ".join(f"{count:,} in {table}" for table, count in plan.counts.items())
        ids = "\n".join(plan.ids[:SHOWN_IDS]) + (f"\n… {len(plan.ids) - SHOWN_IDS:,} more" if len(plan.ids) > SHOWN_IDS
                                                  else "")
        body = Group(literal(plan.summary), Text(f"It changes, in legacy: {changes}.", style="bold"),
                     *(literal(f"{statement};", "yellow") for statement in plan.sql),
                     Text(f"the {len(plan.ids):,} rows of the class:", style="dim"), literal(ids))

        def answered(yes: bool | None) -> None:
            if yes:
                console_of(self).run_engine(partial(remedies.apply, shown=plan), self._done, group="remedies",
                                            refresh=True)
        self.app.push_screen(Confirm(f"Remedy {plan.key}: {plan.choice}", "on legacy, in one transaction:",
                                     body, "Apply it?  y = yes   n = no"), answered)

    def action_accept_loss(self) -> None:
        state = self.selected
        if state is None or not state.count:
            return

        def typed(reason: str | None) -> None:
            if reason:
                console_of(self).run_engine(partial(remedies.accept_loss, key=state.key, reason=reason), self._done,
                                            group="remedies", refresh=True)
        self.app.push_screen(AcceptLoss(state), typed)

    def _done(self, entry: JournalEntry) -> None:
        what = (f"Remedy {entry.detail['remedy']} applied; run the backfill again." if entry.action == "remedy"
                else f"{entry.detail['rows']:,} rows accepted as lost.")
        self.notify(f"{what} Journal entry {entry.id}.", title=str(entry.detail.get("class")), timeout=6)
        self.action_reload()

    def action_back(self) -> None:
        self.dismiss()


class AcceptLoss(TypedConfirm):
    """The reason, typed; journaled with the rows and carried by the backfill gate."""

    def __init__(self, state: ClassState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="danger"):
            yield Static(literal(f"Accept the loss of {self.state.count:,} rows of {self.state.key}", "bold"),
                         id="describe")
            yield Static(literal(f"{self.state.issue}: they will not be in v2. Why may they be lost? Type the "
                                 "reason and press enter (escape: nothing is recorded)."), id="question")
            yield Input(placeholder="reason", id="loss-reason")
