"""Fine-tuning tasks: segmentation, classification and deblurring from a pretrained or random backbone."""
