"""Where task functions compute: the executor interface and sequential executor, threads, processes, Dask."""
