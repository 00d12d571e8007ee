"""Classical emotion models: openSMILE / MFCC features, estimators, ensembles and their bundle.
"""
