"""Model folders and families: loading a masked protein LM (hub id or local folder), building a student
from its layers, and the provenance (`minprot.json`) a folder carries."""
