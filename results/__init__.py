"""After a sweep: the trial dataframe, plots, the exported standalone model, retraining the best config."""
