"""Evaluation: semantic metrics reports and COCO-style instance evaluation."""
