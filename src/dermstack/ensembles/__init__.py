"""dermstack.ensembles: a fine-tuned CNN per fold, stacking, predictions on new data, submissions.

Public API (import from the submodules; this package imports nothing heavy)::

    cnn.cross_validate_cnn(table, task, plan, model, out_dir=None) -> ModelResult
    cnn.predict_cnn_saved(model_dir, table) -> np.ndarray
    stacking.nested_cnn_views(table, task, plan, model, out_dir=None) -> CNNViews
    stacking.cross_validate_stacked(features, table, task, plan, booster, views, out_dir=None) -> ModelResult
    weighted.weighted_mean(outs, task, plan, weights=None, out_dir=None) -> ModelResult
    stacking.stack_models(outs, task, plan, method="stack"|"rank", out_dir=None) -> ModelResult
    stacking.comparison(results, task) -> pl.DataFrame
    predict.predict_run(run_dir, data) -> pl.DataFrame
    submission.write_submission(test_predictions, format, out, sample=None, ids=None, classes=None, model=None)
    submission.validate_submission(path, sample_or_ids, format) -> list[Problem]
"""
