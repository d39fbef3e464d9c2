"""Turning public files into what minprot-ds consumes: UniRef50 FASTA → Arrow shards; task datasets."""
