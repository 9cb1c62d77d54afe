"""Jobs: submitit executors and job records, sweep plans and their cells, pretraining jobs."""
