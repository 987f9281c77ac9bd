"""Hard examples back to the cloud: disagreements between the edge and the heavy model, recorded
as a labelled dataset (``recorder``), reported per camera and model version (``report``) and
exported to COCO (``coco_export``)."""
