"""CSV batch uploads: the upload service, the row reader, downloads and the batch routes."""
