"""What a batch is scored on: `language` (MLM and CLM, the Objective protocol), `electra` (generator samples,
discriminator labels, the combined loss), `classify` (sequence classification). Small functions over tensors;
imports no other lmcore part.
"""
