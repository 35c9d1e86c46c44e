// The LLVM 19 C API pieces cnnc uses: IR builder, analysis, new pass manager, target machine, ORC LLJIT.
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Error.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm-c/Orc.h>
#include <llvm-c/LLJIT.h>
