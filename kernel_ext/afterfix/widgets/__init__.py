"""ipywidgets faces on afterfix's library, one module per widget. Each widget calls the same
library function the CLI does and shows its answer; trace text is escaped (`_common.text`)."""
