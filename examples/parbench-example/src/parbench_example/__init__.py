"""An example parbench plugin: one method (`attr-query`) and one table-format dataset card (`street`)."""
