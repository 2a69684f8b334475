"""Trainers for slimmable networks (PareCO, Slim, TwoStage, Independent), data, BN calibration, evaluation."""
