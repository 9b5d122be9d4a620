"""Reports: the morning briefing as data (`briefing`), as escaped HTML sections (`html`), and
rendered from a papermill template into one offline HTML file (`render`)."""

from afterfix.reports.briefing import Briefing, Section, build_briefing

__all__ = ["Briefing", "Section", "build_briefing"]
