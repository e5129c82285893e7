"""Recording policy in the control server (docs/recording.md): weekly schedules
(``schedule``), the segment catalog in SQLite (``catalog``), repair of segments a crash left
open (``repair``), retention (``retention``), clip export (``clips``) and what ties them to the
routes (``manager``). The data plane writes the segments (``rust/record/``)."""
